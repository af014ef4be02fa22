"""Every script under scripts/ runs: each with --smoke (a tiny case, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
pytestmark = pytest.mark.slow


CASES = [  # script, a line its smoke run prints
    ("calls.py", "art(x, out=y) auto"),
    ("inplace.py", "| 64x256 f32 1t |"),
    ("mechanism.py", "| fused, without peel flag |"),
    ("versions.py", "64 dim -1 1t|inplace"),
    ("exp_in_output.py", "preset/plan `inplace`: "),
    ("repeatability.py", "| `outer_exp_bf16` | exp(x - m) over the outer dim"),
]


@pytest.mark.parametrize("script, says", CASES)
def test_script_smoke(script, says):
    assert {p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("_")} == {s for s, _ in CASES}
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--smoke"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert says in done.stdout, done.stdout[-2000:]
