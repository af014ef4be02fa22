"""The benchmark in its quick mode (seconds): what it measures and writes. No timing assertions: speed
claims come from the full sweep in docs/results, not from a test."""

from __future__ import annotations

import json

import pytest

from fxsoftmax.tools.bench import run_bench
from fxsoftmax.tools.bench.cases import PEERS, PRESETS, cases


def test_quick_bench_writes_tables_plots_and_auto_section(tmp_path):
    text = run_bench("quick", str(tmp_path), repeat=2, inductor=False, quiet=True)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"results.csv", "results.json", "report.md", "time_vs_row_length.png", "ratio_to_exp_floor.png"} <= files
    rows = json.loads((tmp_path / "results.json").read_text())
    methods = {r["method"] for r in rows}
    assert set(PRESETS) | (set(PEERS) - {"inductor"}) == methods
    assert len({(tuple(r["shape"]), r["threads"]) for r in rows}) == len(cases("quick"))
    for r in rows:
        assert r["runs"] == 2 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        if r["method"] in PRESETS:
            assert r["max_err"] <= 1e-5, r
    assert "## Rematerialize vs store" in text and "## `auto` vs the best preset" in text
    assert "| t/t_best | t/t_eager | t/t_exp-floor |" in text and "Machine: " in text


def test_bench_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark kind 'huge'; accepted: quick, full, calibrate"):
        run_bench("huge", str(tmp_path))
    with pytest.raises(ValueError, match="repeat must be at least 1"):
        run_bench("quick", str(tmp_path), repeat=0)


def test_model_bench_times_every_method_and_peer(tmp_path):
    from fxsoftmax.tools.bench.model import BASELINE, IREE_METHODS, run_model_bench

    text = run_model_bench("bert-tiny", str(tmp_path), seq=16, repeat=1, inductor=False, quiet=True)
    rows = {r["method"]: r for r in json.loads((tmp_path / "model_results.json").read_text())["rows"]}
    assert set(rows) == {*IREE_METHODS, "torch eager", "torch sdpa"}
    for m in IREE_METHODS:
        assert rows[m]["dispatches"] > 0 and rows[m]["compile_s"] > 0 and rows[m]["max_err"] <= 1e-4
    assert rows["decomposed, fused"]["plans"] == ["fused"] and rows["eager graph, fused"]["plans"] == ["fused"]
    # kept attention leaves no softmax site to plan; the default decomposes it on cpu
    assert rows["attention kept"]["plans"] == [] and rows["default"]["plans"]
    assert "attention" in rows["default"]["attention"]
    assert (tmp_path / "model_time.png").stat().st_size > 0 and f"/ {BASELINE} |" in text


def test_one_case_from_the_command_line(tmp_path):
    from fxsoftmax.cli import main

    assert main(["bench", "--shape", "64x300", "--dim", "0", "--dtype", "bfloat16", "--threads", "1", "--repeat", "1",
                 "--no-inductor", "--quiet", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(tuple(r["shape"]), r["dim"], r["dtype"], r["threads"]) for r in rows} == {((64, 300), 0, "bfloat16", 1)}
    # every preset that takes a bf16 softmax over dim 0 (`inplace` takes the innermost dim only)
    assert {r["method"] for r in rows} == {*PRESETS, *PEERS} - {"inplace", "inductor"}
    assert "### 64x300 dim 0 bfloat16 1t" in (tmp_path / "report.md").read_text()
    assert main(["bench", "--shape", "64xabc", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_each_dispatch_timed_alone_on_iree(threads):
    import torch

    import fxsoftmax
    from fxsoftmax.tools.bench.dispatches import time_dispatches

    x = torch.randn(512, 4096)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
    copy_bw = 2 * x.numel() * 4 / 1.0  # a copy of x in 1 ms: floor_ms is then bytes moved / that
    timed = time_dispatches(art, threads, copy_bw, repetitions=2, batch=2)
    assert [d.steps for d in timed] == ["12", "34"]  # split stores z = exp(x - m): group 1 writes it, group 2 reads it
    assert all(d.bytes_moved == 2 * x.numel() * 4 for d in timed)  # x or z in, z or y out
    assert all(d.ms > 0 and d.floor_ms == pytest.approx(d.bytes_moved / copy_bw) for d in timed)


def test_the_hand_written_dispatch_is_timed_as_its_one_dispatch_module():
    import torch

    import fxsoftmax
    from fxsoftmax.tools.bench.dispatches import time_dispatches

    x = torch.randn(512, 4096)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="inplace")
    (d,) = time_dispatches(art, 1, 2 * x.numel() * 4, inputs=[x], repetitions=2, batch=2)
    assert (d.steps, d.bytes_moved) == ("1234", 2 * x.numel() * 4) and d.ms > 0  # x in, y out: nothing else
    with pytest.raises(RuntimeError, match="reported no time"):
        time_dispatches(art, 1, 1.0, repetitions=1, batch=1)  # no inputs to run the module on


def test_the_dispatch_benchmark_reads_a_filled_buffer():
    from fxsoftmax.tools.bench.dispatches import _filled

    dumped = '''  util.initializer {
    %buffer = hal.allocator.allocate<%allocator : !hal.allocator> affinity(%queue_affinity) type(%memory_type) usage(%buffer_usage) : !hal.buffer{%c4096}
    util.global.store %buffer, @b : !hal.buffer
'''
    filled = _filled(dumped)
    assert "hal.command_buffer.fill_buffer<%fxs_cmd : !hal.command_buffer> target(%buffer : !hal.buffer)[%fxs_c0, %c4096]" in filled
    assert filled.index("fill_buffer") < filled.index("util.global.store")
    with pytest.raises(RuntimeError, match="format changed"):
        _filled("util.initializer {}")


def test_large_cases_report_where_the_time_goes(tmp_path, monkeypatch):
    from fxsoftmax.cli import main
    from fxsoftmax.tools.bench import dispatches

    monkeypatch.setattr(dispatches, "LARGE_BYTES", 1 << 20)  # 256x1024 f32 counts as large here
    assert main(["bench", "--shape", "256x1024", "--threads", "1", "--repeat", "1", "--no-inductor", "--quiet", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Where the time goes" in text and "| 256x1024 float32 1t |" in text
