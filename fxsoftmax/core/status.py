"""What became of a softmax site (or a fused attention op) in the pass."""

from __future__ import annotations

from enum import Enum


class SiteStatus(str, Enum):
    REWRITTEN = "rewritten"  # one fxsoftmax group op per plan group
    FUSED = "fused"  # left to IREE's own softmax (policy `fused`)
    SKIPPED = "skipped"  # left untouched (non-float, 0-d, a size-1 dim, no shape metadata)
    KEPT = "kept"  # a fused attention op left to IREE's attention kernel

    def __str__(self) -> str:
        return self.value
