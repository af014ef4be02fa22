"""Whole-model benchmark: a built-in model as users build it (transformers' default SDPA attention) through
fxsoftmax with every argument at its default, beside attention kept as IREE's kernel, attention decomposed
under `fused`, IREE on the eager-attention graph, torch eager, torch SDPA and inductor; timed round-robin in
one process, with compile time and dispatch count per IREE method (`fxsoftmax bench --model`). With
`decode`, one decode step of a decoder over a static cache of `seq` positions instead of a prefill."""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable

import torch

from ...api import export
from ...auto.machine import describe
from ...report.inspect import inspect
from ..models import builtin_model
from .measure import round_robin

# name: (attn_implementation of the model, export options); "default" is what a user gets
IREE_METHODS = {
    "default": ("sdpa", {}),
    "attention kept": ("sdpa", {"attention": "keep"}),
    "decomposed, fused": ("sdpa", {"attention": "decompose", "policy": "fused"}),
    "eager graph, fused": ("eager", {"policy": "fused"}),
    "eager graph, auto": ("eager", {}),
}
BASELINE = "eager graph, fused"  # IREE's own softmax on the eager-attention graph
DECODE_POSITION = 100  # the position a timed decode step writes (every step reads the whole cache)


def _inputs(name: str, attn: str, seq: int, layers: int | None, decode: bool):
    """(callable module, args, kwargs, how to pick the main output)."""
    built = builtin_model(name, attn, seq=seq, layers=layers)
    if not decode:
        return built.model, built.args, built.kwargs, built.output
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    model = built.model
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.generation_config.cache_implementation = "static"
    step = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=seq)
    kwargs = {"input_ids": torch.tensor([[11]]), "cache_position": torch.tensor([DECODE_POSITION])}
    return step, (), kwargs, lambda out: out


def run_model_bench(name: str, out: str, *, seq: int = 512, layers: int | None = None, decode: bool = False, repeat: int = 9,
                    inductor: bool = True, quiet: bool = False) -> str:
    """Time built-in model `name`; write model_results.json, model_report.md and model_time.png under `out`."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    say: Callable[[str], None] = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    models = {attn: _inputs(name, attn, seq, layers, decode) for attn in ("sdpa", "eager")}
    want = _reference(models["sdpa"])
    methods: dict[str, Callable[[], object]] = {}
    info: dict[str, dict] = {}
    for method, (attn, options) in IREE_METHODS.items():
        say(f"compiling {name} ({method})")
        model, args, kwargs, output = models[attn]
        t = time.perf_counter()
        art = export(model, args, kwargs, **options)
        compile_s = time.perf_counter() - t
        got = output(art(*args, **kwargs))
        info[method] = {"compile_s": compile_s, "dispatches": inspect(art, stack=False).total_dispatches,
                        "max_err": (got.float() - want.float()).abs().max().item(), "attention": art.attention,
                        "plans": sorted({s.plan for s in art.sites if s.plan != "-"})}
        methods[method] = lambda a=art, x=args, k=kwargs: a(*x, **k)
    with torch.no_grad():
        for attn, label in (("eager", "torch eager"), ("sdpa", "torch sdpa")):
            model, args, kwargs, _ = models[attn]
            methods[label], info[label] = (lambda m=model, x=args, k=kwargs: m(*x, **k)), {}
        if inductor:
            say("compiling with inductor")
            model, args, kwargs, _ = models["sdpa"]
            compiled = torch.compile(model, backend="inductor")
            t = time.perf_counter()
            compiled(*args, **kwargs)
            info["inductor"] = {"compile_s": time.perf_counter() - t}
            methods["inductor"] = lambda: compiled(*args, **kwargs)
        say(f"timing {len(methods)} methods round-robin, {repeat} rounds")
        times = round_robin(methods, repeat)
    rows = [{"method": m, "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "runs": len(ts), **info[m]}
            for m, ts in times.items()]
    case = {"model": name, "seq": seq, "layers": layers, "decode": decode}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model_results.json"), "w") as f:
        json.dump({**case, "machine": describe(), "rows": rows}, f, indent=1)
    title = _title(case)
    text = markdown(rows, title, repeat, _plot(rows, title, out))
    with open(os.path.join(out, "model_report.md"), "w") as f:
        f.write(text)
    return text


def _reference(model_inputs) -> torch.Tensor:
    model, args, kwargs, output = model_inputs
    with torch.no_grad():
        return output(model(*args, **kwargs))


def _title(case: dict[str, Any]) -> str:
    layers = f", {case['layers']} layer(s)" if case.get("layers") else ""
    what = f"decode step over a {case['seq']}-long static cache" if case.get("decode") else f"sequence {case['seq']}"
    return f"{case['model']}{layers}, {what}"


def markdown(rows: list[dict], title: str, repeat: int, plot: str) -> str:
    """The report: each method's time, against IREE's softmax on the eager graph and against the better of
    that and torch SDPA (the default path's bar)."""
    by = {r["method"]: r for r in rows}
    base = by[BASELINE]["median_ms"]
    best_peer = min(base, by["torch sdpa"]["median_ms"])
    info = describe()
    lines = [
        f"# Model benchmark: {title}",
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores; IREE {info.get('iree_compiler', '?')}, torch "
        f"{info.get('torch', '?')}. {repeat} round-robin rounds in one process (each round starts one method later); "
        "times are medians of `art(...)` calls, inputs and outputs as torch tensors. `default` is the SDPA model "
        "exported with every argument at its default.",
        "",
        f"| method | median ms | min | max | / {BASELINE} | / best of it and torch sdpa | compile s | dispatches | max abs err | plans |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        err = f"{r['max_err']:.1e}" if "max_err" in r else "-"
        lines.append(f"| {r['method']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} | {r['median_ms'] / base:.3f} "
                     f"| {r['median_ms'] / best_peer:.3f} | {comp} | {r.get('dispatches', '-')} | {err} | {', '.join(r.get('plans', [])) or '-'} |")
    notes = sorted({r["attention"] for r in rows if r.get("attention")})
    return "\n".join(lines + [""] + [f"- {n}" for n in notes] + ["", f"![time per method]({plot})", ""])


def _plot(rows: list[dict], title: str, out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar([r["method"] for r in rows], [r["median_ms"] for r in rows],
           yerr=[[r["median_ms"] - r["min_ms"] for r in rows], [r["max_ms"] - r["median_ms"] for r in rows]], capsize=3)
    ax.set_ylabel("ms per call (median, min-max)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    path = "model_time.png"
    fig.savefig(os.path.join(out, path), dpi=100)
    plt.close(fig)
    return path
