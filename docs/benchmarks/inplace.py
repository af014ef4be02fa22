"""The `inplace` preset's goal, through the user's call: `auto`, `inplace`, IREE's own softmax (`fused`) and
`split` against ATen (`eager-out`: its kernel into a preallocated output; `eager`), for 4096x16384 and
16384x4096 f32 with 1 thread and all cores, round-robin in one run. IREE calls go through the artifact's
runner for the thread count (`art.runner(driver)(x)`, what `art(x)` does: DLPack in and out, no copies);
`auto` is exported with `threads=` that count. Run: .venv/bin/python docs/benchmarks/inplace.py [ROUNDS]
Writes docs/benchmarks/inplace.md."""

import os, statistics, sys, warnings

import torch

import fxsoftmax
from fxsoftmax.backends.runtime import physical_cores
from fxsoftmax.machine import describe as machine
from fxsoftmax.bench.measure import round_robin

warnings.filterwarnings("ignore")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
info = machine()
lines = [
    "# `inplace` against ATen and IREE's own softmax, through the user's call",
    "",
    f"Machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, IREE {info['iree_compiler']}. "
    f"Medians in ms of {ROUNDS} round-robin rounds after warm-up, all methods side by side in one run "
    "(`.venv/bin/python docs/benchmarks/inplace.py`).",
    "",
    "| case | auto picks | auto | inplace | fused | split | eager-out | eager | eager-out / auto | fused / auto |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for shape in ((4096, 16384), (16384, 4096)):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y = torch.empty_like(x)
    arts = {p: fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=p) for p in ("inplace", "fused", "split")}
    for threads in sorted({1, physical_cores()}):
        driver = "local-sync" if threads == 1 else "local-task"
        auto = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="auto", threads=threads)
        picked = auto.sites[0].plan
        torch.set_num_threads(threads)
        methods = {p: (lambda r=a.runner(driver): r(x)) for p, a in {"auto": auto, **arts}.items()}
        methods["eager-out"] = lambda: torch.ops.aten._softmax.out(x, -1, False, out=y)
        methods["eager"] = lambda: torch.softmax(x, -1)
        for name in ("auto", "inplace"):
            err = (methods[name]()[0] - torch.softmax(x, -1)).abs().max().item()
            assert err < 1e-5, (name, err)
        m = {k: statistics.median(v) for k, v in round_robin(methods, ROUNDS).items()}
        lines.append(f"| {'x'.join(map(str, shape))} f32 {threads}t | {picked} | {m['auto']:.1f} | {m['inplace']:.1f} | {m['fused']:.1f} "
                     f"| {m['split']:.1f} | {m['eager-out']:.1f} | {m['eager']:.1f} | {m['eager-out'] / m['auto']:.2f} | {m['fused'] / m['auto']:.2f} |")
        print(lines[-1], flush=True)
        auto.runner(driver).device.allocator.trim()
text = "\n".join(lines) + "\n"
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "inplace.md"), "w") as f:
    f.write(text)
