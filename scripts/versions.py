"""Every preset on IREE 3.9 against IREE 3.13 with several flag sets, side by side: one child process per
(IREE environment, flags), run in rounds so drift spreads over all of them; medians of the rounds'
medians. On-device times (input placed once), 1 thread (local-sync) and all cores (local-task).

    .venv/bin/python scripts/versions.py [ROUNDS] [--large]   (needs .venv-iree-3.13.0: make test-iree)
    .venv/bin/python scripts/versions.py --smoke              (this environment only, a tiny case, nothing written)

Writes docs/results/versions.md and versions.json."""

import json
import os
import statistics
import sys

from _common import ROOT, child_result

RESULTS = os.path.join(ROOT, "docs", "results")
QUICK = [((64, 2048), -1), ((256, 256), 0)]
LARGE = [((4096, 16384), -1)]
RUNS = {  # label: (environment, extra iree-compile flags)
    "3.9": (".venv", []),
    "3.13 as shipped": (".venv-iree-3.13.0", []),  # the flags fxsoftmax picks for this IREE (reassociation on)
    "3.13 IREE's default (O0)": (".venv-iree-3.13.0", ["--iree-llvmcpu-reassociate-fp-reductions=false"]),
    "3.13 O2": (".venv-iree-3.13.0", ["--iree-opt-level=O2"]),
}

CHILD = r"""
import json, os, statistics, sys, warnings
warnings.filterwarnings("ignore")
import torch, fxsoftmax
from fxsoftmax.tools.bench.measure import round_robin
from fxsoftmax.tools.bench.cases import PRESETS
flags, shapes, repeat = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for shape, dim in shapes:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    arts = {p: fxsoftmax.export(torch.nn.Softmax(dim), (x,), policy=p, extra_flags=flags or ()) for p in PRESETS}
    for threads, driver in ((1, "local-sync"), (os.cpu_count(), "local-task")):
        calls = {}
        for p, art in arts.items():
            r = art.runner(driver); placed = [r.put(x)]
            calls[p] = lambda r=r, placed=placed: r.invoke(placed)
        ts = round_robin(calls, repeat)
        for p, t in ts.items():
            out[f"{'x'.join(map(str, shape))} dim {dim} {threads}t|{p}"] = statistics.median(t)
print("RESULT" + json.dumps(out))
"""


def child(env, flags, shapes, repeat):
    return child_result(os.path.join(env, "bin", "python"), CHILD, json.dumps(flags), json.dumps(shapes), str(repeat), timeout=1800)


def main():
    if "--smoke" in sys.argv:
        out = child(os.path.dirname(os.path.dirname(sys.executable)), [], [((16, 64), -1)], 1)
        print("\n".join(f"{k}: {v:.3f} ms" for k, v in out.items()))
        return
    rounds = int(next((a for a in sys.argv[1:] if a.isdigit()), 3))
    shapes = QUICK + (LARGE if "--large" in sys.argv else [])
    repeat = 9
    got = {label: [] for label in RUNS}
    for _ in range(rounds):
        for label, (env, flags) in RUNS.items():
            got[label].append(child(os.path.join(ROOT, env), flags, shapes, repeat))
    med = {label: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for label, runs in got.items()}
    from fxsoftmax.auto.machine import describe

    info = describe()
    keys = list(med["3.9"])
    labels = list(RUNS)
    lines = ["# Every preset, IREE 3.9 against 3.13", "",
             f"Machine: {info['cpu']}, {info['cores']} cores. `{' '.join(['.venv/bin/python', 'scripts/versions.py'] + sys.argv[1:])}`: "
             f"{rounds} rounds of one child process per column, {repeat} round-robin calls per preset in each; "
             "medians of the rounds' medians, on-device (input placed once). 3.13 columns give the time as a ratio to 3.9's.", "",
             "| case | preset | 3.9 ms | " + " | ".join(labels[1:]) + " |", "|---|---|---|" + "---|" * (len(labels) - 1)]
    for k in keys:
        case, preset = k.split("|")
        base = med["3.9"][k]
        lines.append(f"| {case} | {preset} | {base:.3f} | " + " | ".join(f"{med[l][k] / base:.2f}x" for l in labels[1:]) + " |")
    worst = {l: max(med[l][k] / med["3.9"][k] for k in keys) for l in labels[1:]}
    within = {l: sum(med[l][k] / med["3.9"][k] <= 1.1 for k in keys) for l in labels[1:]}
    lines += ["", "| 3.13 flags | cells within 1.1x of 3.9 | worst ratio |", "|---|---|---|"]
    lines += [f"| {l} | {within[l]} of {len(keys)} | {worst[l]:.2f}x |" for l in labels[1:]]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "versions.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "versions.json"), "w") as f:
        json.dump({"machine": info, "rounds": got, "medians": med}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
