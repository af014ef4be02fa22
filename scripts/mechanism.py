"""What two choices of the dispatch-region mechanism cost or save on a real model (BERT-base width).

1. Producers in the first group: `split` with the scale and mask pulled into group 1, against the same
   plan with pulling turned off (x then comes from IREE's own producer dispatch): bytes the site's
   dispatches read and write, and model time.
2. The peel flag (quirks.PEEL_FLAG), which only modules keeping an IREE softmax get: the `fused` module
   compiled with and without it, model time.

    .venv/bin/python scripts/mechanism.py [--layers N] [--seq N] [--repeat N] [--smoke]

Prints the table of docs/results/mechanism.md (--smoke: hidden 64, vocabulary 1000, seq 16, one round).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch
import transformers

import fxsoftmax
from fxsoftmax import quirks
from fxsoftmax.auto.machine import describe
from fxsoftmax.backends.artifact import Artifact
from fxsoftmax.backends.compiler import compile_cached
from fxsoftmax.tools.bench.measure import round_robin


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--smoke", action="store_true", help="hidden 64, vocabulary 1000, seq 16, one round")
    a = ap.parse_args()
    small = dict(hidden_size=64, num_attention_heads=2, intermediate_size=128, vocab_size=1000, layers=1, seq=16, repeat=1) if a.smoke else {}
    a.layers, a.seq, a.repeat = small.pop("layers", a.layers), small.pop("seq", a.seq), small.pop("repeat", a.repeat)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=a.layers, attn_implementation="eager", **small)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, a.seq))
    mask = torch.ones(1, a.seq, dtype=torch.int64)
    mask[0, -a.seq // 8:] = 0
    args = (ids, mask)

    arts: dict[str, Artifact] = {}
    arts["split, producers in group 1"] = fxsoftmax.export(model, args, policy="split")
    pull = quirks.may_pull_producers
    quirks.may_pull_producers = lambda later_reads_x: False
    try:
        arts["split, producers outside"] = fxsoftmax.export(model, args, policy="split")
    finally:
        quirks.may_pull_producers = pull
    fused = fxsoftmax.export(model, args, policy="fused")
    assert quirks.PEEL_FLAG in fused.flags
    arts["fused, with peel flag"] = fused
    flags = [f for f in fused.flags if f != quirks.PEEL_FLAG]
    vmfb = compile_cached(fused.mlir, flags, what="fused without peel").output
    arts["fused, without peel flag"] = dataclasses.replace(fused, vmfb=vmfb, flags=flags, _runners={})

    info = describe()
    print(f"hidden {cfg.hidden_size}, {a.layers} layer(s), seq {a.seq}; {info['cpu']}, {info['cores']} cores; IREE {info['iree_compiler']}\n")
    print("| variant | dispatches | bytes read + written by all dispatches | model ms (median of %d, round-robin, `art(...)`) |" % a.repeat)
    print("|---|---:|---:|---:|")
    calls = {}
    for name, art in arts.items():
        calls[name] = lambda art=art: art(*args)
    times = round_robin(calls, a.repeat)
    for name, art in arts.items():
        report = fxsoftmax.inspect(art, stack=False)
        exes = {e.name: e for e in report.executables}
        moved = sum(t.bytes or 0 for c in report.calls for t in (*exes[c.executable].reads, *exes[c.executable].writes))
        print(f"| {name} | {report.total_dispatches} | {moved:,} | {statistics.median(times[name]):.1f} |")


if __name__ == "__main__":
    main()
