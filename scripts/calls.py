"""The user's call on this IREE: `art(x)` and `art(x, out=y)` against ATen (`eager`, and `eager-out`: its
kernel into a preallocated output) for a 4096x16384 f32 softmax with all cores, round-robin in one run, and
the minor page faults each call takes. Run it in each IREE environment to compare versions:

    .venv/bin/python scripts/calls.py [--rounds N] [--smoke]
    .venv-iree-3.13.0/bin/python scripts/calls.py

Writes docs/results/calls-iree-<version>.json and .md (with --smoke: a tiny case, nothing written)."""

import json
import os
import resource
import statistics
import warnings

import torch
from _common import ROOT, rounds_and_smoke

import fxsoftmax
from fxsoftmax.auto.machine import describe
from fxsoftmax.tools.bench.measure import round_robin

warnings.filterwarnings("ignore")


def main() -> None:
    a = rounds_and_smoke(__doc__.splitlines()[0], 11)
    shape, rounds = ((64, 256), 1) if a.smoke else ((4096, 16384), a.rounds)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    want, y = torch.softmax(x, -1), torch.empty_like(x)
    arts = {p: fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=p) for p in ("auto", "split", "fused", "inplace")}
    methods = {f"art(x) {p}": (lambda a=art: a(x)) for p, art in arts.items()}
    methods["art(x, out=y) auto"] = lambda: arts["auto"](x, out=y)
    methods["eager-out"] = lambda: torch.ops.aten._softmax.out(x, -1, False, out=y)
    methods["eager"] = lambda: torch.softmax(x, -1)
    for name, method in methods.items():
        assert (method() - want).abs().max().item() <= 1e-5, name
    faults = {}
    for name, method in methods.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        method()
        faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    times = {k: statistics.median(v) for k, v in round_robin(methods, rounds).items()}
    info = describe()
    rows = [{"method": k, "median_ms": times[k], "minor_faults_per_call": faults[k]} for k in methods]
    lines = [f"# The user's call, IREE {info['iree_compiler']}", "",
             f"4096x16384 f32 softmax, all cores; {info['cpu']}, {info['cores']} cores; medians of {rounds} round-robin "
             f"rounds (`scripts/calls.py`). `auto` picked `{arts['auto'].sites[0].plan}`.", "",
             "| method | median ms | / eager-out | minor page faults per call |", "|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['median_ms']:.1f} | {r['median_ms'] / times['eager-out']:.2f} | {r['minor_faults_per_call']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.smoke:
        path = os.path.join(ROOT, "docs", "results", f"calls-iree-{info['iree_compiler']}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".json", "w") as f:
            json.dump({"machine": info, "rows": rows, "auto": arts["auto"].sites[0].plan}, f, indent=1)
        with open(path + ".md", "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
