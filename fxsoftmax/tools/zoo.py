"""The model zoo: Hugging Face families from tiny configs (random weights, nothing downloaded), called the
way users call them, and a sweep writing the table family x path x preset."""

from __future__ import annotations

import copy
import os
import time
import traceback
from typing import Callable

import torch

from .. import api
from ..backends.pipeline import Options, build
from ..core.status import SiteStatus
from .models import BY_NAME, NOT_TEXT, BuiltModel, family_model

PATHS = ("export", "torch.compile", "decode")
DECODE_CACHE = 16  # static KV cache length of the decode path
DECODE_STEPS = 4  # cache positions the decode path runs


def decode_step(zm: BuiltModel, max_cache_len: int = DECODE_CACHE) -> torch.nn.Module:
    """transformers' exportable static-cache decode step (the ExecuTorch path): one token and its cache
    position in, logits out, the KV cache held in buffers the step updates."""
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    model = copy.deepcopy(zm.model)
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.generation_config.cache_implementation = "static"
    return TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=max_cache_len)


def _decode(zm: BuiltModel, policy: str) -> tuple[float, list]:
    """Export the decode step, run it on IREE for DECODE_STEPS positions beside eager; the largest
    difference in logits, and the sites."""
    steps = [{"input_ids": torch.tensor([[t]]), "cache_position": torch.tensor([pos])}
             for pos, t in enumerate(zm.args[0][0, :DECODE_STEPS].tolist())]
    eager = decode_step(zm)
    try:
        want = [eager(**step) for step in steps]
    except Exception as e:
        raise RuntimeError(f"transformers' static-cache decode step fails in eager: {e}") from e
    art = api.export(decode_step(zm), (), steps[0], policy=policy)
    err = max((art(**step).float() - w.float()).abs().max().item() for step, w in zip(steps, want))
    return err, art.sites


def _export(zm: BuiltModel, policy: str, programs: dict):
    """fxsoftmax.export, reusing the torch.export of the same model across policies (`programs`)."""
    options = Options(policy)
    return build(zm.model, zm.args, zm.kwargs, options, api.chooser_for(options), what=zm.name, programs=programs)


def check_family(name: str, path: str, policy: str, attn: str = "eager", *, mask: bool = False, programs: dict | None = None) -> dict:
    """Run one family through one path under one policy; the row of the zoo table. `attn` "default" builds
    the family as transformers does by default (its default attention and MoE experts), "eager" with eager
    attention (and batched_mm experts). `programs` caches torch.export results across calls (the same seeded model each time)."""
    fam = BY_NAME[name]
    row = {"family": name, "kind": fam.kind, "path": path, "policy": policy, "attn": attn, "mask": mask}
    t = time.perf_counter()
    zm = None
    try:
        zm = family_model(name, attn, mask=mask, experts="default" if attn == "default" else "batched_mm")
        with torch.no_grad():
            if path == "decode":
                if fam.kind not in ("decoder", "moe"):
                    raise ValueError(f"the decode path is for decoders; {name} is {fam.kind}")
                err, sites = _decode(zm, policy)
            else:
                want = zm.output(zm.model(*zm.args, **zm.kwargs))
                if path == "export":
                    art = _export(zm, policy, {} if programs is None else programs.setdefault((name, attn, mask), {}))
                    got, sites = zm.output(art(*zm.args, **zm.kwargs)), art.sites
                else:
                    be = api.backend(policy=policy)
                    torch._dynamo.reset()
                    got = zm.output(torch.compile(zm.model, backend=be)(*zm.args, **zm.kwargs))
                    sites = [s for g in be.graphs for s in g.sites]
                err = (got.float() - want.float()).abs().max().item()
        status = {"fused": (SiteStatus.FUSED,), "auto": (SiteStatus.FUSED, SiteStatus.REWRITTEN)}.get(policy, (SiteStatus.REWRITTEN,))
        row.update(sites=sum(s.status in status for s in sites), err=err)
        row["ok"] = row["err"] <= 1e-4 and row["sites"] == fam.softmaxes
        row["error"] = "" if row["ok"] else f"sites {row['sites']} (want {fam.softmaxes}), max err {row['err']:.1e}"
    except Exception as e:  # recorded in the table, not the end of the sweep
        row.update(ok=False, error=f"{type(e).__name__}: {_first_line(e, 'error:')}"[:300], trace=traceback.format_exc()[-2000:])
    if not row["ok"] and zm is not None and path == "export":
        row["plain_turbine"] = plain_turbine(zm)
    row["seconds"] = round(time.perf_counter() - t, 1)
    return row


def plain_turbine(zm: BuiltModel) -> str:
    """What plain iree-turbine makes of the model (its aot.export, then iree-compile for this CPU with
    nothing of fxsoftmax): "compiles", or its first error."""
    from iree.turbine import aot

    from ..backends import flags
    from ..backends.compiler import iree_compile
    from ..backends.targets import Target

    try:
        with torch.no_grad():
            mlir = str(aot.export(zm.model, args=zm.args, kwargs=zm.kwargs).mlir_module)
        iree_compile(mlir, flags.target_flags(Target("cpu")), what=f"{zm.name} (plain iree-turbine)")
        return "compiles"
    except Exception as e:
        return f"{type(e).__name__}: {_first_line(e, 'error', lower=True)}"[:200]


def _first_line(e: Exception, needle: str, lower: bool = False) -> str:
    """The first line of `e`'s message holding `needle`, else its first line."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return next((l for l in lines if needle in (l.lower() if lower else l)), lines[0] if lines else "")


def run_zoo(out: str, policies: tuple[str, ...], paths: tuple[str, ...] = PATHS, attns: tuple[str, ...] = ("eager",),
            families: tuple[str, ...] | None = None, say: Callable[[str], None] = print, filename: str = "zoo.md") -> str:
    """The table family x inputs x path x attention x preset, written to `out`/`filename`; returns it."""
    rows = []
    programs: dict = {}
    for name in families or tuple(BY_NAME):
        text = BY_NAME[name].kind not in NOT_TEXT
        for mask in (False, True) if text else (False,):
            for path in [p for p in paths if p != "decode" or (BY_NAME[name].kind in ("decoder", "moe") and not mask)]:
                for attn in attns:
                    for policy in policies:
                        row = check_family(name, path, policy, attn, mask=mask, programs=programs)
                        rows.append(row)
                        say(f"{name:14} {'mask' if mask else '    '} {path:13} {attn:5} {policy:9} {'ok' if row['ok'] else 'FAIL ' + row['error']}")
        programs.clear()
    text = _table(rows, policies)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, filename), "w") as f:
        f.write(text)
    return text


def _table(rows: list[dict], policies: tuple[str, ...]) -> str:
    lines = ["# fxsoftmax model zoo", "",
             "Tiny configs (1 layer, hidden 32), random weights; a cell is",
             "`ok` when the output is within 1e-4 of eager and the softmax sites found equal the model's softmaxes",
             "(attention decomposed on CPU, routers). Attention `default` is the family as transformers builds it by default: its default",
             "attention (SDPA where it has it) and MoE experts (`grouped_mm`); `eager` sets eager attention (and",
             "`batched_mm` experts). A failure says what plain iree-turbine makes of the same model.", "",
             "| family | kind | inputs | path | attention | " + " | ".join(policies) + " |",
             "|---|---|---|---|---|" + "---|" * len(policies)]
    cells: dict[tuple, dict] = {}
    for r in rows:
        inputs = "ids + padding mask" if r["mask"] else {"vision": "pixels", "audio": "waveform", "speech": "log-mel"}.get(r["kind"], "ids")
        if r["path"] == "decode":
            inputs = f"one id + cache position ({DECODE_STEPS} steps, cache {DECODE_CACHE})"
        cells.setdefault((r["family"], r["kind"], inputs, r["path"], r["attn"]), {})[r["policy"]] = r
    failures = []
    for (fam, kind, inputs, path, attn), by in cells.items():
        lines.append(f"| {fam} | {kind} | {inputs} | {path} | {attn} | " + " | ".join(
            ("ok" if by[p]["ok"] else "FAIL") if p in by else "-" for p in policies) + " |")
        failures += [f"- {fam} / {inputs} / {path} / {attn} / {p}: {r['error']}" + _plain(r) for p, r in by.items() if not r["ok"]]
    ok = sum(r["ok"] for r in rows)
    return "\n".join(lines + ["", f"{ok} of {len(rows)} cells ok.", ""] + (["## Failures", ""] + failures + [""] if failures else []))


def _plain(row: dict) -> str:
    if "plain_turbine" not in row:
        return ""
    said = row["plain_turbine"]
    return " (plain iree-turbine compiles it)" if said == "compiles" else f" (plain iree-turbine fails too: {said})"
