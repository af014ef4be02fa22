"""Attention: find the fused attention ops a graph keeps, or decompose them so their softmax is a site.

Where attention should go is decided per device (fxsoftmax.backends.pipeline, `attention="auto"`); here
are the two ways: keep (IREE's attention kernel) or decompose (matmuls and a `_safe_softmax`)."""

from __future__ import annotations

import math

import torch
import torch.fx as fx
import torch.nn.functional as F

aten = torch.ops.aten
ATTENTION_OPS = {
    aten.scaled_dot_product_attention.default: "aten.scaled_dot_product_attention",
    aten._scaled_dot_product_flash_attention_for_cpu.default: "aten._scaled_dot_product_flash_attention_for_cpu",
}
KEPT_REASON = "fused attention left to IREE's attention kernel (attention='decompose' rewrites its softmax)"


def sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Scaled dot-product attention as plain ops, with `_safe_softmax` (fully masked rows give 0, as SDPA's),
    so the softmax pass can rewrite it. The scale multiplies the scores, as Hugging Face's eager attention
    does: IREE fuses it into the score matmul's dispatch. (Scaling q and k first, as ATen's math kernel
    does, put the scaling into the matmul's inner loop: 1x12x512x512x64 f32 took 6.5 ms instead of 2.0.)
    Grouped-query attention multiplies each key/value head by the query heads that share it, as one matmul,
    instead of repeating keys and values (a LLaMA-2048 layer at sequence 512: 0.94-0.96x the time)."""
    *batch, heads, length, width = query.shape
    source = key.size(-2)
    factor = scale if scale is not None else 1.0 / math.sqrt(width)
    groups = key.size(-3) if enable_gqa and key.size(-3) != heads else heads
    q = query.reshape(*batch, groups, (heads // groups) * length, width)  # heads sharing a key/value head, stacked
    scores = ((q @ key.transpose(-2, -1)) * factor).reshape(*batch, heads, length, source)
    if is_causal:
        keep = torch.arange(length, device=query.device).unsqueeze(-1) >= torch.arange(source, device=query.device)
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask.logical_not(), float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    probs = aten._safe_softmax.default(scores, -1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    out = probs.reshape(*batch, groups, (heads // groups) * length, source) @ value
    return out.reshape(*batch, heads, length, value.size(-1))


def _sdpa_math_unless_decode(query, key, value, *args, **kwargs):
    """sdpa_math, except for a query of one position (a decode step), which stays one attention op."""
    if isinstance(query.shape[-2], int) and query.shape[-2] == 1:
        return NotImplemented
    return sdpa_math(query, key, value, *args, **kwargs)


# Each attention mode's decomposition of scaled_dot_product_attention ("keep": none, IREE's attention kernel);
# "decompose-prefill" decomposes where the query holds more than one position, and keeps a decode step's.
_DECOMPOSITION_OF = {"keep": None, "decompose": sdpa_math, "decompose-prefill": _sdpa_math_unless_decode}


def may_keep(mode: str) -> bool:
    """Whether `mode` leaves any scaled_dot_product_attention to IREE's attention kernel."""
    return _DECOMPOSITION_OF[mode] is not sdpa_math


def attention_decompositions(mode: str) -> dict:
    """Decomposition-table entries for `mode` ("keep" leaves IREE its attention kernel)."""
    if mode not in _DECOMPOSITION_OF:
        raise ValueError(f"unknown attention mode {mode!r}; accepted: {', '.join(_DECOMPOSITION_OF)}")
    decomposition = _DECOMPOSITION_OF[mode]
    return {aten.scaled_dot_product_attention.default: decomposition} if decomposition else {}


def fold_sdpa_scale(gm: fx.GraphModule) -> int:
    """Move an explicit `scale=` of scaled_dot_product_attention into the query: sdpa(q * s * sqrt(E), k, v)
    equals sdpa(q, k, v, scale=s). IREE 3.9's importer rejects the `scale` argument; Hugging Face sets it."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.scaled_dot_product_attention.default:
            continue
        scale = node.kwargs.get("scale", node.args[6] if len(node.args) > 6 else None)
        if scale is None:
            continue
        q = node.args[0]
        qval = q.meta.get("val")
        head = qval.shape[-1] if qval is not None else None
        if not isinstance(head, int):
            continue  # a symbolic head size: leave it (IREE will say if it cannot compile it)
        factor = float(scale) * math.sqrt(head)
        with gm.graph.inserting_before(node):
            scaled = gm.graph.call_function(aten.mul.Tensor, (q, factor))
        scaled.meta.update({k: v for k, v in q.meta.items() if k in ("stack_trace", "nn_module_stack")})
        if qval is not None:
            with qval.fake_mode:
                scaled.meta["val"] = aten.mul.Tensor(qval, factor)
        args = list(node.args)
        args[0] = scaled
        kwargs = dict(node.kwargs)
        if len(args) > 6:
            args[6] = None
        kwargs.pop("scale", None)
        node.args, node.kwargs = tuple(args), kwargs
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def kept_attention(gm: fx.GraphModule) -> list[fx.Node]:
    """Fused attention ops still in the graph (IREE lowers them to its own attention kernel)."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in ATTENTION_OPS]
