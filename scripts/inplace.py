"""The `inplace` preset's goal, through the user's call: `auto`, `inplace`, IREE's own softmax (`fused`) and
`split` against ATen (`eager-out`: its kernel into a preallocated output; `eager`), for 4096x16384 and
16384x4096 f32 with 1 thread and all cores, round-robin in one run. IREE calls go through the artifact's
runner for the thread count (what `art(x)` does: DLPack in and out, no copies); `auto` is exported with
`threads=` that count.

    .venv/bin/python scripts/inplace.py [--rounds N] [--smoke]

Writes docs/results/inplace.md (with --smoke: a tiny case, one round, nothing written)."""

import os
import statistics
import warnings

import torch
from _common import ROOT, rounds_and_smoke

import fxsoftmax
from fxsoftmax.auto.machine import describe
from fxsoftmax.backends.runtime import physical_cores
from fxsoftmax.tools.bench.measure import round_robin

warnings.filterwarnings("ignore")


def main() -> None:
    a = rounds_and_smoke(__doc__.splitlines()[0], 9)
    shapes, rounds = (((64, 256),), 1) if a.smoke else (((4096, 16384), (16384, 4096)), a.rounds)
    info = describe()
    lines = ["# `inplace` against ATen and IREE's own softmax, through the user's call", "",
             f"Machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, IREE {info['iree_compiler']}. "
             f"Medians in ms of {rounds} round-robin rounds after warm-up, all methods side by side in one run "
             "(`.venv/bin/python scripts/inplace.py`).", "",
             "| case | auto picks | auto | inplace | fused | split | eager-out | eager | eager-out / auto | fused / auto |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in shapes:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        y, want = torch.empty_like(x), torch.softmax(x, -1)
        arts = {p: fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=p) for p in ("inplace", "fused", "split")}
        for threads in sorted({1, physical_cores()}):
            driver = "local-sync" if threads == 1 else "local-task"
            auto = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="auto", threads=threads)
            torch.set_num_threads(threads)
            methods = {p: (lambda r=art.runner(driver): r(x)) for p, art in {"auto": auto, **arts}.items()}
            methods["eager-out"] = lambda: torch.ops.aten._softmax.out(x, -1, False, out=y)
            methods["eager"] = lambda: torch.softmax(x, -1)
            for name in ("auto", "inplace"):
                err = (methods[name]()[0] - want).abs().max().item()
                assert err < 1e-5, (name, err)
            m = {k: statistics.median(v) for k, v in round_robin(methods, rounds).items()}
            lines.append(f"| {'x'.join(map(str, shape))} f32 {threads}t | {auto.sites[0].plan} | {m['auto']:.1f} | {m['inplace']:.1f} "
                         f"| {m['fused']:.1f} | {m['split']:.1f} | {m['eager-out']:.1f} | {m['eager']:.1f} "
                         f"| {m['eager-out'] / m['auto']:.2f} | {m['fused'] / m['auto']:.2f} |")
            print(lines[-1], flush=True)
    if not a.smoke:
        with open(os.path.join(ROOT, "docs", "results", "inplace.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
