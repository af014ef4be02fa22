"""Can IREE keep exp(x - m) in the output buffer inside one dispatch? Compiles the two hand-written dispatches
in scripts/exp_in_output/ for this CPU and counts the exp range-reduction rounds (`vrndscaleps`, AVX-512) in
the machine code; `split` (12|34, one exp per element) is the reference, `inplace` the hand-written kernel.

    .venv/bin/python scripts/exp_in_output.py [--smoke]

Writes docs/results/exp_in_output.md (with --smoke: the presets on a small softmax, nothing written)."""

import argparse
import glob
import os
import subprocess
import tempfile
import warnings

import torch
from _common import ROOT
from iree.compiler.tools.binaries import find_tool

import fxsoftmax

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exp_in_output")
FLAGS = ["--iree-hal-target-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]


def rounds(mlir_path: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run([find_tool("iree-compile"), mlir_path, *FLAGS, f"--iree-hal-dump-executable-intermediates-to={d}",
                              "-o", os.path.join(d, "m.vmfb")], capture_output=True, text=True)
        if res.returncode:
            return "does not compile: " + next(l for l in res.stderr.splitlines() if "error:" in l).split("error: ", 1)[1]
        return f"{sum(open(f).read().count('vrndscaleps') for f in glob.glob(os.path.join(d, '*.s')))} exp rounds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a small softmax, nothing written")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    shape = (64, 256) if a.smoke else (4096, 16384)
    lines = ["# exp(x - m) in the output buffer", "", f"`.venv/bin/python scripts/exp_in_output.py`, softmax {shape[0]}x{shape[1]} f32:", ""]
    with tempfile.TemporaryDirectory() as d:
        for plan in ("split", "fused", "1234", "inplace"):
            art = fxsoftmax.export(torch.nn.Softmax(-1), (torch.zeros(*shape),), policy=plan)
            path = os.path.join(d, f"{plan}.mlir")
            with open(path, "w") as f:
                f.write(art.mlir)
            lines.append(f"- preset/plan `{plan}`: {rounds(path)}")
    for name in () if a.smoke else ("destination_passing", "store_then_reload"):
        lines.append(f"- `{name}.mlir`: {rounds(os.path.join(HERE, name + '.mlir'))}")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.smoke:
        with open(os.path.join(ROOT, "docs", "results", "exp_in_output.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
