"""The command line, driven as a user would (subprocess)."""

import subprocess
import sys


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fxsoftmax", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_demo_runs_the_default_job_on_iree_cpu():
    out = run("demo", "--repeat", "3").stdout
    assert "policy 'split'" in out and "local-task" in out
    rows = [l for l in out.splitlines() if l.startswith("softmax")]
    assert len(rows) == 2
    for row in rows:
        cols = row.split()
        assert cols[2] == "split" and cols[3] == "2" and cols[4] == "12|34" and cols[-1] == "yes"
        assert float(cols[5]) <= 1e-5
    assert "model output max|err| vs eager" in out


def test_demo_rejects_unknown_policy():
    proc = run("demo", "--policy", "fastest", check=False)
    assert proc.returncode == 2
    assert "unknown policy 'fastest'" in proc.stderr and "'split-sum'" in proc.stderr
