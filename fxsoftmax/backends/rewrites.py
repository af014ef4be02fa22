"""fxsoftmax's own rewrites of ops IREE's importer cannot lower and PyTorch does not decompose: one entry per
op, with what IREE does with it, the evidence, and the rewrite (a decomposition applied at export; it
returns NotImplemented for a call it leaves alone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

aten = torch.ops.aten


@dataclass(frozen=True)
class Rewrite:
    op: str  # the op's qualified name, e.g. "aten.histc.default"
    iree: str  # what IREE 3.9 does with it
    evidence: str
    decomposition: Callable


def _histc(x: torch.Tensor, bins: int = 100, min: float = 0, max: float = 0):
    if min == max:  # the range comes from the data
        return NotImplemented
    lo, hi = float(min), float(max)
    # ATen's formula (linear bins, no edge search): the bin of x is floor((x - lo) * bins / (hi - lo)), x == hi in the last
    index = ((x - lo) * bins / (hi - lo)).floor().clamp(0, bins - 1).to(torch.int64).reshape(-1, 1)
    inside = ((x >= lo) & (x <= hi)).reshape(-1, 1)
    return ((index == torch.arange(bins, device=x.device)) & inside).sum(0).to(x.dtype)


def _topk(x: torch.Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    if sorted:
        return NotImplemented
    return aten.topk.default(x, k, dim, largest, True)  # a sorted top-k is one valid unsorted answer


def _grouped_mm(x: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                out_dtype: torch.dtype | None = None):
    if offs is None or bias is not None or x.dim() != 2 or weight.dim() != 3 or out_dtype not in (None, x.dtype):
        return NotImplemented
    # row s belongs to group g when offs[g-1] <= s < offs[g]: g is the number of group ends at or before s;
    # rows past the last end (g == groups) stay zero, as transformers' fallback leaves them
    group = (torch.arange(x.shape[0], device=x.device).unsqueeze(-1) >= offs.unsqueeze(0)).sum(-1, keepdim=True)
    out = torch.zeros(x.shape[0], weight.shape[2], dtype=x.dtype, device=x.device)
    for g in range(weight.shape[0]):  # every group's matmul over every row, kept where the row is its
        out = torch.where(group == g, x @ weight[g], out)
    return out


def _scatter_value(x: torch.Tensor, dim: int, index: torch.Tensor, value: float):
    dim = dim % x.dim()
    if x.dim() == 0 or [s for d, s in enumerate(index.shape) if d != dim] != [s for d, s in enumerate(x.shape) if d != dim]:
        return NotImplemented
    # how often each position along dim is indexed (moved last); IREE 3.9 cannot lower a bool any() over a dim
    hits = (index.unsqueeze(-1) == torch.arange(x.shape[dim], device=x.device)).sum(dim, dtype=torch.int32)
    return torch.where(hits.movedim(-1, dim) > 0, torch.full((), value, dtype=x.dtype, device=x.device), x)


REWRITES = (
    Rewrite("aten.histc.default",
            "not lowered by the importer (UnsupportedOpError naming aten.histc); transformers' default `grouped_mm` MoE "
            "experts count tokens per expert with it, over integer expert ids",
            "tests/backends/test_rewrites.py::test_histc; Mixtral and Qwen2-MoE with default experts (tests/models/test_zoo.py)",
            _histc),
    Rewrite("aten.topk.default",
            "sorted=False fails to legalize the op's torch.constant.bool (plain iree-turbine fails too); group-limited MoE "
            "routers call it so",
            "tests/backends/test_rewrites.py::test_topk_unsorted",
            _topk),
    Rewrite("aten.scatter.value",
            "IREE 3.9 scatters a value at indices a topk made into the wrong rows (a group-limited router's group mask, "
            "DeepSeek-V3's: logits 3e-2 from eager); rewritten as a comparison of each position with the indices",
            "tests/backends/test_rewrites.py::test_scatter_value_at_topk_indices; DeepSeek-V3 (tests/models/test_zoo.py)",
            _scatter_value),
    Rewrite("transformers.grouped_mm_fallback.default",
            "a custom op (transformers' grouped matmul for non-bf16 weights under export and torch.compile) the importer "
            "leaves as torch.operator; rewritten as every group's matmul over every row, each row kept from its own "
            "group (num_groups/top_k times the work of a grouped kernel, and no data-dependent shapes)",
            "tests/backends/test_rewrites.py::test_grouped_mm; Mixtral and Qwen2-MoE with default experts",
            _grouped_mm),
    Rewrite("aten._grouped_mm.default",
            "not lowered by the importer; transformers' grouped matmul for bf16 weights",
            "tests/backends/test_rewrites.py::test_grouped_mm",
            _grouped_mm),
)


def decompositions() -> dict:
    """{op: rewrite} for every rewrite whose op exists in this process (transformers registers its own)."""
    table = {}
    for rewrite in REWRITES:
        namespace, name, overload = rewrite.op.split(".")
        packet = getattr(getattr(torch.ops, namespace), name, None)
        if packet is not None:
            table[getattr(packet, overload)] = rewrite.decomposition
    return table
