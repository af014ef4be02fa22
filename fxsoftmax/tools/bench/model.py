"""Whole-model benchmark: a built-in model under every policy against IREE's own module (`fused`), torch
eager and inductor, timed round-robin in one process, with compile time and dispatch count per policy."""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import torch

from ...api import export
from ...auto.machine import describe as machine
from ...core.policy import PRESETS
from ...report.inspect import inspect
from .measure import round_robin

POLICIES = tuple(p for p in PRESETS)  # fused, the plans, auto


def run_model_bench(name: str, out: str, *, seq: int = 128, repeat: int = 9, inductor: bool = True, quiet: bool = False) -> str:
    """Time built-in model `name` at sequence length `seq`; write results.json, report.md and a plot."""
    from ..models import builtin_model

    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    tm = builtin_model(name, "eager", seq=seq)
    model, args, kwargs = tm.model, tm.args, tm.kwargs
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    with torch.no_grad():
        want = tm.output(model(*args, **kwargs))
    methods: dict[str, Callable[[], object]] = {}
    info: dict[str, dict] = {}
    for policy in POLICIES:
        say(f"compiling {name} with {policy}")
        t = time.perf_counter()
        art = export(model, args, kwargs, policy=policy)
        compile_s = time.perf_counter() - t
        runner = art.runner()
        placed = [runner.put(x) for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor)]
        got = tm.output(art(*args, **kwargs))
        plans = sorted({s.plan for s in art.sites if s.status in ("rewritten", "fused")})
        info[policy] = {"compile_s": compile_s, "dispatches": inspect(art, stack=False).total_dispatches,
                        "max_err": (got.float() - want.float()).abs().max().item(), "plans": plans}
        methods[policy] = lambda r=runner, p=placed: r.invoke(p)
    with torch.no_grad():
        methods["eager"] = lambda: model(*args, **kwargs)
        info["eager"] = {}
        if inductor:
            say("compiling with inductor")
            torch._dynamo.reset()
            compiled = torch.compile(model, backend="inductor")
            t = time.perf_counter()
            compiled(*args, **kwargs)
            info["inductor"] = {"compile_s": time.perf_counter() - t}
            methods["inductor"] = lambda: compiled(*args, **kwargs)
        say(f"timing {len(methods)} methods round-robin, {repeat} rounds")
        times = round_robin(methods, repeat)
    rows = [{"method": m, "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "runs": len(ts), **info[m]}
            for m, ts in times.items()]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model_results.json"), "w") as f:
        json.dump({"model": name, "seq": seq, "machine": machine(), "rows": rows}, f, indent=1)
    plot = _plot(rows, name, seq, out)
    text = _markdown(rows, name, seq, repeat, plot)
    with open(os.path.join(out, "model_report.md"), "w") as f:
        f.write(text)
    return text


def _markdown(rows: list[dict], name: str, seq: int, repeat: int, plot: str) -> str:
    fused = next(r["median_ms"] for r in rows if r["method"] == "fused")
    info = machine()
    lines = [
        f"# Model benchmark: {name}, sequence {seq}",
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores; {repeat} round-robin rounds in one process, "
        "inputs placed on the IREE device once; times are medians.",
        "",
        "| method | median ms | min | max | t / t_fused | compile s | dispatches | max abs err vs eager | plans |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        err = f"{r['max_err']:.1e}" if "max_err" in r else "-"
        lines.append(
            f"| {r['method']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} | {r['median_ms'] / fused:.3f} "
            f"| {comp} | {r.get('dispatches', '-')} | {err} | {', '.join(r.get('plans', [])) or '-'} |"
        )
    return "\n".join(lines + ["", f"![time per method]({plot})", ""])


def _plot(rows: list[dict], name: str, seq: int, out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([r["method"] for r in rows], [r["median_ms"] for r in rows],
           yerr=[[r["median_ms"] - r["min_ms"] for r in rows], [r["max_ms"] - r["median_ms"] for r in rows]], capsize=3)
    ax.set_ylabel("ms per call (median, min-max)")
    ax.set_title(f"{name}, sequence {seq}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    path = "model_time.png"
    fig.savefig(os.path.join(out, path), dpi=100)
    plt.close(fig)
    return path
