"""Side-by-side timings behind the README's speed notes (all cores, f32, IREE local-task, round-robin):

1. compile flags on `split`: `--iree-opt-level=O3`; the vectorization strategy (masking, IREE 3.9's
   default, vs peeling, which fxsoftmax now passes) on `split`, `split-sum` and `fused`;
2. exp vs exp2 on a pre-scaled input, in the same hand-built `split` graph.

Run: .venv/bin/python docs/benchmarks/variants.py   (a few minutes)
"""

import math
import statistics
import time

import torch

import fxsoftmax
from fxsoftmax.ops import BOUNDARY

LOG2E = 1 / math.log(2)
MASK = ["--iree-llvmcpu-vector-pproc-strategy=mask"]  # later flags win: this undoes fxsoftmax's peel
REPEAT = 15


class HandSplit(torch.nn.Module):
    def __init__(self, exp2: bool):
        super().__init__()
        self.exp2 = exp2

    def forward(self, x):
        m = x.amax(-1, keepdim=True)
        z = torch.exp2(x * LOG2E - m * LOG2E) if self.exp2 else torch.exp(x - m)
        z = BOUNDARY(z)
        return BOUNDARY(z * torch.reciprocal(z.sum(-1, keepdim=True)))


def side_by_side(x: torch.Tensor, arts: dict) -> dict[str, list[float]]:
    want = torch.softmax(x, -1)
    fns, placed = {}, None
    for name, art in arts.items():
        runner = art.runner("local-task")
        placed = placed or [runner.put(x)]
        err = (runner.fetch(runner.invoke(placed)[0]) - want).abs().max().item()
        assert err <= 1e-5, (name, err)
        fns[name] = lambda r=runner, p=placed: r.invoke(p)
    for f in fns.values():
        f(), f()
    times = {name: [] for name in fns}
    for _ in range(REPEAT):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def show(times: dict[str, list[float]], base: str) -> None:
    ref = statistics.median(times[base])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:22s} {med:9.3f} ms [{min(ts):.3f}-{max(ts):.3f}]  / {base}: {med / ref:.3f}")


def main() -> None:
    softmax = torch.nn.Softmax(-1)
    x = torch.randn(4096, 16384)
    print("4096x16384, flags on split")
    show(side_by_side(x, {
        "split": fxsoftmax.export(softmax, (x,), policy="split"),
        "split O3": fxsoftmax.export(softmax, (x,), policy="split", extra_flags=["--iree-opt-level=O3"]),
    }), "split")
    print("4096x16384, hand-built split: exp vs exp2")
    show(side_by_side(x, {
        "exp": fxsoftmax.export(HandSplit(False), (x,), policy="fused"),
        "exp2": fxsoftmax.export(HandSplit(True), (x,), policy="fused"),
    }), "exp")
    for shape in [(4096, 16384), (1536, 128), (6144, 512), (4096, 100), (1, 1048576)]:
        x = torch.randn(shape)
        print(f"{'x'.join(map(str, shape))}: peel (default now) vs mask")
        arts = {}
        for p in ("split", "split-sum", "fused"):
            arts[p] = fxsoftmax.export(softmax, (x,), policy=p)
            arts[p + " mask"] = fxsoftmax.export(softmax, (x,), policy=p, extra_flags=MASK)
        show(side_by_side(x, arts), "split")


if __name__ == "__main__":
    main()
