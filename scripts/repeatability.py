"""How far one probe's time moves on this machine, with nothing else running: the machine probes `auto`
measures, each timed in CHILDREN child processes started PAUSE seconds apart, then in one process every PAUSE
seconds for OVER_TIME samples on the same buffers; 1 thread (local-sync), inputs placed once, the result
written into storage kept across calls.

    .venv/bin/python scripts/repeatability.py [--rounds CHILDREN]
    .venv/bin/python scripts/repeatability.py --smoke     (two children, two probes, nothing written)

Writes docs/results/repeatability.md."""

import json
import os
import statistics
import sys
import tempfile
import time

from _common import ROOT, child_result, rounds_and_smoke

PAUSE = 10
OVER_TIME = 15  # samples in one process
# probe: (what it measures, the inputs machine._measure_threads gives it, its result's elements)
PROBES = {
    "read": ("256 MiB of f32 read from memory", "big_rows", "stream_rows"),
    "stream_mid": ("8 MiB of f32 read and written (beyond L2, within the last-level cache)", "mid", "mid"),
    "outer_exp_f32": ("exp(x - m) over the outer dim of [512, 4096], f32 (8 MiB in, 8 out)", "columns_f32", "mid"),
    "outer_exp_bf16": ("exp(x - m) over the outer dim of [512, 4096], bf16 (4 MiB in, 4 out)", "columns_bf16", "mid"),
    "exp_f32": ("exp over 8 rows of 16384 f32 in L2, 256 times", "rows_f32", "rows"),
}
SMOKE = ("outer_exp_bf16", "exp_f32")

CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from fxsoftmax.auto import machine
from fxsoftmax.auto.probes import MID, ROW, ROWS, STREAM
from fxsoftmax.backends.runtime import IreeRunner
vmfb, probes, calls, samples, pause = open(sys.argv[1], "rb").read(), json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
inp = machine._inputs()
args = {"big_rows": [inp["big"].view(STREAM // ROW, ROW)], "mid": [inp["big"][:MID]],
        "columns_f32": [inp["columns"]["float32"], inp["columns"]["float32"][0]],
        "columns_bf16": [inp["columns"]["bfloat16"], inp["columns"]["float32"][0]],
        "rows_f32": [inp["rows"]["float32"], inp["repeats"]]}
results = {"stream_rows": STREAM // ROW, "mid": MID, "rows": ROWS}
runners = {}
for name, (arg, result) in probes.items():
    runner = IreeRunner(vmfb, "local-sync", name)
    runners[name] = (runner, [*(runner.put(a) for a in args[arg]), runner.allocate(4 * results[result])])
out = {name: [] for name in probes}
for i in range(samples):
    time.sleep(pause if i else 0)
    for name, (runner, placed) in runners.items():
        out[name].append(machine.median_placed_ms(runner, placed, calls))
print("RESULT" + json.dumps(out))
"""


def _table(names, times: dict) -> list[str]:
    lines = ["| probe | what it measures | min ms | median ms | max ms | max / min |", "|---|---|---:|---:|---:|---:|"]
    for n in names:
        ts = times[n]
        lines.append(f"| `{n}` | {PROBES[n][0]} | {min(ts):.3f} | {statistics.median(ts):.3f} | {max(ts):.3f} | "
                     f"{max(ts) / min(ts):.2f} |")
    return [*lines, "", "In order (ms): " + "; ".join(", ".join(f"{t:.2f}" for t in times[n]) + f" ({n})" for n in names)]


def main():
    args = rounds_and_smoke("how far each machine probe's time moves between fresh processes and over time", 8)
    from fxsoftmax.auto import probes
    from fxsoftmax.auto.machine import describe
    from fxsoftmax.backends import flags
    from fxsoftmax.backends.compiler import iree_compile
    from fxsoftmax.backends.targets import Target

    names = SMOKE if args.smoke else tuple(PROBES)
    children, calls, samples = (2, 3, 2) if args.smoke else (args.rounds, 21, OVER_TIME)
    pause = 0 if args.smoke else PAUSE
    chosen = {n: PROBES[n][1:] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        vmfb = os.path.join(tmp, "probes.vmfb")
        with open(vmfb, "wb") as f:
            f.write(iree_compile(probes.module(), flags.module_flags(Target("cpu"), ["rewritten"]), what="the machine probes").output)
        runs = []
        for i in range(children):
            time.sleep(pause if i else 0)
            runs.append({n: ts[0] for n, ts in child_result(sys.executable, CHILD, vmfb, json.dumps(chosen), str(calls), "1", "0",
                                                              timeout=600).items()})
        over_time = child_result(sys.executable, CHILD, vmfb, json.dumps(chosen), str(calls), str(samples), str(pause),
                                 timeout=600 + samples * pause)
    info = describe()
    lines = ["# How far a probe's time moves on this machine", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, run with nothing else running, "
             f"`.venv/bin/python scripts/repeatability.py --rounds {children}`. Each figure is the median of {calls} "
             "calls of a probe (1 thread, inputs placed once, the result written into storage kept across calls).", "",
             f"## Between processes: {children} child processes started {pause} s apart", "",
             *_table(names, {n: [r[n] for r in runs] for n in names}), "",
             f"## Over time: one process, the same buffers, {samples} samples {pause} s apart", "",
             *_table(names, over_time)]
    text = "\n".join(lines) + "\n"
    if not args.smoke:
        with open(os.path.join(ROOT, "docs", "results", "repeatability.md"), "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
