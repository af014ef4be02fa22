"""What the measuring scripts share: the repository root, their arguments and their child processes."""

import argparse
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rounds_and_smoke(description: str, rounds: int) -> argparse.Namespace:
    """--rounds (default `rounds`) and --smoke (a tiny case, one round, nothing written)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--smoke", action="store_true", help="a tiny case, one round, nothing written")
    return ap.parse_args()


def child_result(python: str, code: str, *args: str, timeout: float) -> dict:
    """Run `code` in a fresh `python` process with `args`; the JSON it printed after "RESULT"."""
    res = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(line[6:])
