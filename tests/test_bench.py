"""The benchmark in its quick mode (seconds): what it measures and writes. No timing assertions: speed
claims come from the full sweep in docs/benchmarks, not from a test."""

from __future__ import annotations

import json

import pytest

from fxsoftmax.bench import run_bench
from fxsoftmax.bench.cases import PEERS, PRESETS, cases


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


def test_model_bench_times_every_policy_and_peer(tmp_path):
    from fxsoftmax.bench.model import POLICIES, run_model_bench

    text = run_model_bench("bert-tiny", str(tmp_path), seq=16, repeat=1, inductor=False, quiet=True)
    rows = {r["method"]: r for r in json.loads((tmp_path / "model_results.json").read_text())["rows"]}
    assert set(rows) == {*POLICIES, "eager"}
    for p in POLICIES:
        assert rows[p]["dispatches"] > 0 and rows[p]["compile_s"] > 0 and rows[p]["max_err"] <= 1e-4
    assert rows["split"]["plans"] == ["split"] and rows["fused"]["plans"] == ["fused"]
    assert (tmp_path / "model_time.png").stat().st_size > 0 and "| t / t_fused |" in text


def test_one_case_from_the_command_line(tmp_path):
    from fxsoftmax.cli import main

    assert main(["bench", "--shape", "64x300", "--dim", "0", "--dtype", "bfloat16", "--threads", "1", "--repeat", "1",
                 "--no-inductor", "--quiet", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(tuple(r["shape"]), r["dim"], r["dtype"], r["threads"]) for r in rows} == {((64, 300), 0, "bfloat16", 1)}
    assert set(PRESETS) <= {r["method"] for r in rows}
    assert "### 64x300 dim 0 bfloat16 1t" in (tmp_path / "report.md").read_text()
    assert main(["bench", "--shape", "64xabc", "--out", str(tmp_path)]) == 2
