"""The `auto` policy's chooser, checked against a small fixed calibration; and `auto` end to end."""

from __future__ import annotations

import json

import pytest
import torch

import fxsoftmax
from fxsoftmax.auto.chooser import AutoChooser, load_calibration
from fxsoftmax.auto.costmodel import dispatch_work, predict_dispatches_ms, predict_ms
from fxsoftmax.auto.machine import Constants, Threads
from fxsoftmax.core.policy import parse_policy
from helpers import aten, aten_graph

pytestmark = pytest.mark.iree


def _case(rows, row, last, threads, times, dtype="float32", **extra):
    return {"rows": rows, "row_len": row, "last_dim": last, "threads": threads, "dtype": dtype, "times": times, **extra}


CALIBRATION = {
    "cases": [
        _case(4096, 16384, True, 2, {"remat": 90.0, "split": 60.0, "split-sum": 65.0, "per-step": 110.0, "online": 360.0, "fused": 55.0}),
        _case(4096, 16384, True, 1, {"remat": 140.0, "split": 111.0, "split-sum": 105.0, "per-step": 160.0, "online": 700.0}),
        _case(1, 1048576, True, 2, {"remat": 3.0, "split": 4.0, "split-sum": 4.5, "per-step": 5.0, "online": 9.0}),
        _case(1024, 4096, False, 2, {"remat": 20.0, "split": 12.0, "split-sum": 11.0, "per-step": 25.0, "online": 40.0}),
    ]
}


@pytest.mark.parametrize(
    "rows, row, last, threads, want",
    [
        (4096, 16384, True, 2, "split"),  # exact point; fused is faster but has no measured stack: excluded
        (4096, 16384, True, 1, "split-sum"),  # same shape, one thread
        (2048, 32768, True, 2, "split"),  # nearest is the 4096 x 16384 point
        (1, 2000000, True, 2, "remat"),  # a long single row
        (1, 2000000, True, 8, "remat"),  # 8 threads never calibrated: the nearest thread count (2) is used
        (512, 8192, False, 2, "split-sum"),  # a non-last dim uses the non-last cases
    ],
)
def test_chooser_picks_the_best_preset_of_the_nearest_case(rows, row, last, threads, want):
    plan, why = AutoChooser("cpu", threads, CALIBRATION).choose(rows, row, last)
    assert plan.label == want
    assert why.startswith("auto: nearest calibrated case") and want in why


def test_a_calibration_offers_inplace_only_where_the_site_takes_it():
    cal = {"cases": [dict(CALIBRATION["cases"][0], times={**CALIBRATION["cases"][0]["times"], "inplace": 30.0})]}
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True)[0].label == "inplace"
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True, in_output=False)[0].label == "split"
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True, "bfloat16")[0].label == "inplace"
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True, "float64")[0].label == "split"


def test_fused_is_a_candidate_only_with_a_measured_stack_within_the_limit():
    cal = {"cases": [dict(CALIBRATION["cases"][0], fused_stack=64)]}
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True)[0].label == "fused"
    cal = {"cases": [dict(CALIBRATION["cases"][0], fused_stack=1 << 20)]}
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True)[0].label == "split"


class Site:
    def __init__(self, shape, dim, dtype=torch.float32):
        self.shape, self.dim, self.compute_dtype = shape, dim, dtype


def test_gpu_rule_and_dynamic_shapes():
    gpu = AutoChooser("gpu", 1)
    assert gpu(Site((8, 128), 1))[0].label == "fused"
    assert gpu(Site((8, 128), 0))[0].label == "remat"
    plan, why = AutoChooser("cpu", 2, CALIBRATION)(Site((8, "s0"), 1))  # a symbolic size
    assert plan.label == "inplace" and "dynamic shape" in why
    assert AutoChooser("cpu", 2, CALIBRATION)(Site((8, "s0"), 1, torch.bfloat16))[0].label == "inplace"
    assert AutoChooser("cpu", 2, CALIBRATION)(Site((8, "s0"), 1, torch.float64))[0].label == "remat"  # inplace: no float64
    assert AutoChooser("cpu", 2, CALIBRATION)(Site(("s0", 8), 0))[0].label == "remat"  # inplace: innermost only


def test_cuda_rule_gives_split_to_the_rows_it_was_measured_faster_on():
    """On cuda `split` for innermost rows of 512 to 4096 (an H200, docs/results/gpu-h200), else the GPU rule;
    hip keeps the rule."""
    cuda, hip = AutoChooser("gpu", 1, device="cuda"), AutoChooser("gpu", 1, device="hip")
    assert [cuda(Site((12 * 512, n), 1))[0].label for n in (128, 511, 512, 4096, 4097, 16384)] == \
        ["fused", "fused", "split", "split", "fused", "fused"]
    assert "cuda rule" in cuda(Site((12, 512, 512), 2))[1]
    assert cuda(Site((8, "s0"), 1))[0].label == "fused" and cuda(Site((1024, 4096), 0))[0].label == "remat"
    assert hip(Site((12 * 512, 512), 1))[0].label == "fused"


def test_auto_in_the_pass_reports_its_reason():
    x = torch.randn(1024, 4096)
    gm = aten_graph(lambda t: aten.softmax.int(t, 0), x)
    result = fxsoftmax.decompose_softmax(gm, "auto", chooser=AutoChooser("cpu", 2, CALIBRATION))
    site = result.sites[0]
    assert (site.plan, site.status) == ("split-sum", "rewritten") and site.reason.startswith("auto:")
    torch.testing.assert_close(gm(x), torch.softmax(x, 0), atol=1e-6, rtol=0)


def test_cost_model_drives_auto_end_to_end():
    x = torch.randn(64, 2048)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="auto", threads=1)
    site = art.sites[0]
    want, why = AutoChooser("cpu", 1).choose(64, 2048, True)  # the model's pick, from this machine's constants
    assert site.plan == want.label and site.reason == why
    assert why.startswith("auto: cost model for 64x2048 float32 last dim, 1 thread(s): ") and "ms predicted (vs " in why
    assert (art(x) - torch.softmax(x, -1)).abs().max().item() <= 1e-5
    assert fxsoftmax.inspect(art, stack=False).sites[0].matches_plan


def test_this_machines_calibration_wins_and_the_packaged_one_is_the_fallback(tmp_path, monkeypatch):
    from fxsoftmax.auto import chooser as costmodel

    mine = tmp_path / "calibration_cpu.json"
    mine.write_text(json.dumps(CALIBRATION))
    monkeypatch.setattr(costmodel, "USER", str(mine))
    assert AutoChooser("cpu", 1).choose(4096, 16384, True) == (parse_policy("split-sum"), AutoChooser("cpu", 1, CALIBRATION).choose(4096, 16384, True)[1])

    def cannot_measure(*_):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(costmodel, "USER", str(tmp_path / "none.json"))
    monkeypatch.setattr(costmodel.machine, "constants", cannot_measure)
    plan, why = AutoChooser("cpu", 2).choose(4096, 16384, True)
    assert why.startswith("auto: machine constants unavailable (RuntimeError: no compiler here); packaged nearest calibrated case")
    assert plan.label == AutoChooser("cpu", 2, load_calibration(costmodel.PACKAGED)).choose(4096, 16384, True)[0].label


def _constants(**overrides) -> Constants:
    """Round made-up machine constants: 1 ns/B memory, 0.1 ns per in-cache pass, 1 ns per exp, 0.5 ns per
    bf16 element written, 2 MiB L2, no cost per row of `inplace`'s kernel."""
    per = dict(read_ns_per_byte={"mid": 0.5, "large": 1.0}, write_ns_per_byte={"mid": 0.5, "large": 1.0},
               columns_read_ns_per_element={"float32": 4.0, "bfloat16": 4.0}, pass_ns_per_element={"float32": 0.1, "bfloat16": 0.1},
               exp_ns_per_element={"float32": 1.0, "bfloat16": 1.0}, dispatch_us=1.0, call_us=2.0,
               narrow_write_ns_per_element={"float32": 0.0, "bfloat16": 0.5}, outer_exp_ns_per_element={"float32": 2.0, "bfloat16": 5.0},
               in_output_row_ns=0.0)
    per.update(overrides)
    return Constants("test", 2, 2 << 20, 16, {1: Threads(**per), 2: Threads(**per)})


def test_the_model_counts_what_each_plan_moves_and_computes():
    c = _constants()
    predict = lambda p, rows=4096, row=16384, dtype="float32": predict_ms(parse_policy(p), rows, row, True, dtype, 1, c)  # noqa: E731
    n = 4096 * 16384
    # fused: x read once, y written once (large: 1 ns/B), 3 passes in cache, 2 exps per element, 1 dispatch, 1 call
    assert predict("fused") == pytest.approx((n * 4 * 2 + n * 0.3 + n * 2.0) * 1e-6 + 1e-3 + 2e-3)
    # inplace: the same traffic, one exp, and it prefetches: its traffic and its compute overlap
    assert predict("inplace") == pytest.approx(max(n * 4 * 2, n * 0.3 + n * 1.0) * 1e-6 + 1e-3 + 2e-3)
    # split stores z: one more full write and read than fused, one more pass and dispatch, one exp fewer
    assert predict("split") - predict("fused") == pytest.approx(n * (4 * 2 + 0.1 - 1.0) * 1e-6 + 1e-3, rel=1e-3)
    # bf16: half the bytes; each element of a bf16 result is rounded as written (inplace: z, then y)
    assert predict("fused", rows=8192, dtype="bfloat16") == pytest.approx(2 * n * (2 * 2 + 0.3 + 2.0 + 0.5) * 1e-6 + 3e-3)
    assert predict("inplace", rows=64, dtype="bfloat16") == pytest.approx((64 * 16384 * (0.3 + 1.0 + 2 * 0.5)) * 1e-6 + 3e-3)
    # a row too long for L2 rereads x from memory for each further pass
    assert predict("inplace", rows=1, row=1 << 24) > predict("inplace", rows=1024, row=1 << 14)


def test_inplace_pays_per_row_and_iree_dispatches_do_not():
    """`inplace`'s kernel costs about 23 ns more per row at the same elements (AMD EPYC Zen 4, 1 thread, f32:
    69 us on 24x8192, 109 on 1536x128, 144 on 3072x64); IREE's dispatches gain 7 ns at most."""
    c = _constants(in_output_row_ns=20.0)
    predict = lambda p, rows, row: predict_ms(parse_policy(p), rows, row, True, "float32", 1, c)  # noqa: E731
    assert predict("inplace", 1536, 128) - predict("inplace", 24, 8192) == pytest.approx((1536 - 24) * 20e-6)
    assert predict("split-sum", 1536, 128) == predict("split-sum", 24, 8192)


def test_threads_share_whole_rows():
    one = _constants().at(1)
    two = Threads(**{k: {d: x / 2 for d, x in v.items()} if isinstance(v, dict) else v / 2 if k.endswith("per_byte") else v
                     for k, v in vars(one).items()})  # two threads: half the aggregate cost per byte and per element
    c = Constants("test", 2, 2 << 20, 16, {1: one, 2: two})
    for plan in ("split", "per-step"):  # per-step's exp and scale dispatches are elementwise: no more threads either
        one_row = [predict_ms(parse_policy(plan), 1, 1 << 20, True, "float32", t, c) for t in (1, 2)]
        assert one_row[0] == one_row[1]
        rows = [predict_ms(parse_policy(plan), 64, 1 << 14, True, "float32", t, c) for t in (1, 2)]
        assert rows[1] < 0.6 * rows[0]
    assert dispatch_work(parse_policy("per-step"))[1].reductions == 0


def test_auto_leaves_fused_out_for_an_outer_dim():
    auto = AutoChooser("cpu", 2, constants=_constants())
    assert "fused" in auto.predicted_ms(4096, 16384, True) and "fused" not in auto.predicted_ms(1024, 4096, False)
    plan, why = auto.choose(4096, 16384, True)
    assert plan.label == next(iter(auto.predicted_ms(4096, 16384, True))) == "inplace"
    assert f"inplace {auto.predicted_ms(4096, 16384, True)['inplace']:.3g} ms predicted" in why


def test_a_softmax_over_an_outer_dim_costs_what_its_probes_measured():
    """Its reductions read columns at the measured cost per element of the dtype; its exp(x - m) pass costs
    the measured outer-dim elementwise pass (bf16 ran at 2.4x f32's time there on an AMD EPYC Zen 4)."""
    c = _constants()
    n = 1024 * 4096
    remat = {d: predict_dispatches_ms(parse_policy("remat"), 4096, 1024, False, d, 1, c) for d in ("float32", "bfloat16")}
    # the last group, exp(x - m) / l into y: the measured pass, the 8 MiB probe's cost scaled to the footprint
    # (x and y: 32 MiB in f32, 16 MiB in bf16)
    for dtype, size, measured in (("float32", 4, 2.0), ("bfloat16", 2, 5.0)):
        scale = c.memory_ns_per_byte(1, n * size * 2)[0] / 0.5
        assert remat[dtype][2] == pytest.approx((n * measured * scale + 1e3) * 1e-6)
    cheap = _constants(columns_read_ns_per_element={"float32": 4.0, "bfloat16": 1.0})
    # the max over columns (group 1) of bf16 x: cheaper where bf16 columns are
    assert predict_dispatches_ms(parse_policy("remat"), 4096, 1024, False, "bfloat16", 1, cheap)[0] < remat["bfloat16"][0]
