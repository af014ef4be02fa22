"""Where attention should go on this device: scaled_dot_product_attention alone, kept as IREE's attention
kernel against decomposed into matmuls and a softmax site (planned by `auto`), over sequence lengths,
decode steps over a cache, heads and dtypes, timed round-robin in one process (`fxsoftmax bench --attention`)."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ...api import export
from ...auto.machine import describe
from .measure import round_robin


@dataclass(frozen=True)
class AttentionCase:
    heads: int
    query: int  # query length (1: a decode step)
    keys: int  # key/value length (the cache, for a decode step)
    dtype: str
    causal: bool = False
    kv_heads: int = 0  # grouped-query attention when not 0

    @property
    def label(self) -> str:
        kv = f", {self.kv_heads} kv heads" if self.kv_heads else ""
        return f"{self.heads} heads{kv}, q {self.query} x kv {self.keys}, {self.dtype}{', causal' if self.causal else ''}"


class _Sdpa(torch.nn.Module):
    def __init__(self, causal: bool, gqa: bool):
        super().__init__()
        self.causal, self.gqa = causal, gqa

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.gqa)


def cases(quick: bool = False) -> list[AttentionCase]:
    if quick:
        return [AttentionCase(2, 16, 16, "float32"), AttentionCase(2, 1, 64, "float32")]
    out = [AttentionCase(12, n, n, d) for d in ("float32", "bfloat16") for n in (16, 64, 128, 256, 512, 1024, 2048)]
    out += [AttentionCase(12, 1, n, d) for d in ("float32", "bfloat16") for n in (512, 2048, 4096)]
    out += [AttentionCase(h, 128, 128, "float32") for h in (2, 32)]
    out += [AttentionCase(12, 512, 512, "float32", causal=True), AttentionCase(32, 512, 512, "float32", True, 4),
            AttentionCase(32, 1, 2048, "float32", kv_heads=4)]
    return out


def time_case(case: AttentionCase, repeat: int) -> dict:
    """Medians of IREE kept, IREE decomposed (policy auto) and torch's SDPA, and the decomposed error."""
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    kv = case.kv_heads or case.heads
    q = torch.randn(1, case.heads, case.query, 64, generator=g).to(dtype)
    k, v = (torch.randn(1, kv, case.keys, 64, generator=g).to(dtype) for _ in range(2))
    model = _Sdpa(case.causal and case.query == case.keys, bool(case.kv_heads))
    methods, errors = {}, {}
    with torch.no_grad():
        want = model(q, k, v).float()
    for mode in ("keep", "decompose"):
        art = export(model, (q, k, v), attention=mode)
        runner = art.runner()
        placed = [runner.put(t) for t in (q, k, v)]
        errors[mode] = (runner.call(placed)[0].float() - want).abs().max().item()
        methods[mode] = lambda r=runner, p=placed: r.invoke(p)
    with torch.no_grad():
        methods["torch sdpa"] = lambda: model(q, k, v)
        times = round_robin(methods, repeat)
    row = {**asdict(case), "label": case.label, **{f"{m}_ms": statistics.median(t) for m, t in times.items()}}
    row["keep_over_decompose"] = row["keep_ms"] / row["decompose_ms"]
    row.update({f"{m}_err": e for m, e in errors.items()})
    return row


def run_attention_bench(out: str, *, repeat: int = 7, quick: bool = False, say=print) -> str:
    """Time every case; write attention.json and attention.md into `out`; return the Markdown."""
    rows = []
    for case in cases(quick):
        rows.append(time_case(case, repeat))
        say(f"{case.label}: keep / decompose {rows[-1]['keep_over_decompose']:.2f}")
    info = describe()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "attention.json"), "w") as f:
        json.dump({"machine": info, "rows": rows}, f, indent=1)
    lines = [
        "# Where attention goes: IREE's attention kernel kept vs decomposed",
        "",
        f"`fxsoftmax bench --attention`: scaled_dot_product_attention alone (head dim 64), IREE {info['iree_compiler']} on "
        f"{info['cpu']}, {info['cores']} cores; medians of {repeat} round-robin rounds, inputs placed on the device once. "
        "`decompose` is matmuls and a softmax site planned by `auto`; `keep / decompose` above 1 means decomposing is faster.",
        "",
        "| case | keep ms | decompose ms | torch sdpa ms | keep / decompose | max abs err (decomposed) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['keep_ms']:.3f} | {r['decompose_ms']:.3f} | {r['torch sdpa_ms']:.3f} | "
                     f"{r['keep_over_decompose']:.2f} | {r['decompose_err']:.1e} |")
    slower = [r for r in rows if r["keep_over_decompose"] < 1]
    lines += ["", f"Decomposed is faster in {len(rows) - len(slower)} of {len(rows)} cases"
              + (": kept wins in " + "; ".join(f"{r['label']} ({r['keep_over_decompose']:.2f})" for r in slower) if slower else ".")]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "attention.md"), "w") as f:
        f.write(text)
    return text
