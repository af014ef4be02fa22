"""Can IREE keep exp(x - m) in the output buffer inside one dispatch? Compiles the two hand-written
dispatches here for this CPU and counts the exp range-reduction rounds (`vrndscaleps`, AVX-512) in the
machine code; `split` (12|34, one exp per element) is the reference, `inplace` the hand-written kernel. Run: .venv/bin/python docs/benchmarks/exp_in_output/check.py"""

import glob, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
COMPILE = os.path.join(os.path.dirname(sys.executable), "iree-compile")
FLAGS = ["--iree-hal-target-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]


def rounds(mlir_path: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run([COMPILE, mlir_path, *FLAGS, f"--iree-hal-dump-executable-intermediates-to={d}", "-o", os.path.join(d, "m.vmfb")],
                             capture_output=True, text=True)
        if res.returncode:
            return "does not compile: " + next(l for l in res.stderr.splitlines() if "error:" in l).split("error: ", 1)[1]
        return f"{sum(open(f).read().count('vrndscaleps') for f in glob.glob(os.path.join(d, '*.s')))} exp rounds"


if __name__ == "__main__":
    import torch, warnings
    warnings.filterwarnings("ignore")
    import fxsoftmax

    with tempfile.TemporaryDirectory() as d:
        for plan in ("split", "fused", "1234", "inplace"):
            art = fxsoftmax.export(torch.nn.Softmax(-1), (torch.zeros(4096, 16384),), policy=plan)
            path = os.path.join(d, f"{plan}.mlir")
            open(path, "w").write(art.mlir)
            print(f"preset/plan {plan}: {rounds(path)}")
    for name in ("destination_passing", "store_then_reload"):
        print(f"{name}.mlir: {rounds(os.path.join(HERE, name + '.mlir'))}")
