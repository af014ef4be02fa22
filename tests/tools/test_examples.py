"""The examples run as shipped."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compile_hf_model_example():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compile_hf_model.py"), "--policy", "remat"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("gpt2-tiny", "bert-tiny"):
        header = next(l for l in out.splitlines() if l.startswith(f"== {name}"))
        assert float(header.rsplit(" ", 1)[1]) <= 1e-4
    assert out.count("rewritten plan remat") == 4  # two attention layers in each model
    assert "| softmax | remat |" in out
