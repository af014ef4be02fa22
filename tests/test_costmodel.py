"""The `auto` policy's chooser, checked against a small fixed calibration; and `auto` end to end."""

from __future__ import annotations

import pytest
import torch

import fxsoftmax
from fxsoftmax.costmodel import AutoChooser, load_calibration
from helpers import aten, aten_graph


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


def test_fused_is_a_candidate_only_with_a_measured_stack_within_the_limit():
    cal = {"cases": [dict(CALIBRATION["cases"][0], fused_stack=64)]}
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True)[0].label == "fused"
    cal = {"cases": [dict(CALIBRATION["cases"][0], fused_stack=1 << 20)]}
    assert AutoChooser("cpu", 2, cal).choose(4096, 16384, True)[0].label == "split"


def test_gpu_rule_and_dynamic_shapes():
    class Site:
        def __init__(self, shape, dim):
            self.shape, self.dim, self.compute_dtype = shape, dim, torch.float32

    gpu = AutoChooser("gpu", 1)
    assert gpu(Site((8, 128), 1))[0].label == "fused"
    assert gpu(Site((8, 128), 0))[0].label == "remat"
    plan, why = AutoChooser("cpu", 2, CALIBRATION)(Site((8, "s0"), 1))  # a symbolic size
    assert plan.label == "remat" and "dynamic shape" in why


def test_auto_in_the_pass_reports_its_reason():
    x = torch.randn(1024, 4096)
    gm = aten_graph(lambda t: aten.softmax.int(t, 0), x)
    result = fxsoftmax.decompose_softmax(gm, "auto", chooser=AutoChooser("cpu", 2, CALIBRATION))
    site = result.sites[0]
    assert (site.plan, site.status) == ("split-sum", "rewritten") and site.reason.startswith("auto:")
    torch.testing.assert_close(gm(x), torch.softmax(x, 0), atol=1e-6, rtol=0)


def test_packaged_calibration_drives_auto_end_to_end():
    cal = load_calibration()
    assert cal["cases"] and all({"rows", "row_len", "threads", "times"} <= c.keys() for c in cal["cases"])
    x = torch.randn(64, 2048)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="auto", threads=1)
    site = art.sites[0]
    want, why = AutoChooser("cpu", 1, cal).choose(64, 2048, True)  # the calibration's pick for this case
    assert site.plan == want.label and site.reason == why
    assert (art(x) - torch.softmax(x, -1)).abs().max().item() <= 1e-5
    assert fxsoftmax.inspect(art, stack=False).sites[0].matches_plan
