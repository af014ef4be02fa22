"""What the benchmark measures: cases (shape, dim, dtype, threads)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from ...auto.machine import has_bf16
from ...core.policy import FIXED_PRESETS, IN_OUTPUT, in_output_applies

PRESETS = FIXED_PRESETS
PEERS = ("eager", "eager-out", "inductor", "copy-floor", "exp-floor")


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    dim: int
    dtype: str  # "float32" | "bfloat16"
    threads: int

    @property
    def row_len(self) -> int:
        return self.shape[self.dim]

    @property
    def rows(self) -> int:
        return math.prod(self.shape) // self.row_len

    @property
    def last_dim(self) -> bool:
        return self.dim in (-1, len(self.shape) - 1)

    @property
    def size(self) -> str:
        return "x".join(map(str, self.shape)) + ("" if self.last_dim else f" dim {self.dim}")

    @property
    def presets(self) -> tuple[str, ...]:
        """The presets that take this case (`inplace` only over the innermost dim)."""
        return tuple(p for p in PRESETS if p != IN_OUTPUT or in_output_applies(self.last_dim, {self.dtype}))

    @property
    def label(self) -> str:
        return f"{self.size} {self.dtype} {self.threads}t"

    def as_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "rows": self.rows, "row_len": self.row_len, "last_dim": self.last_dim}


FULL_SHAPES = [
    ((1, 1048576), -1),  # one long row (the seed's 1-D case)
    ((4096, 16384), -1),
    ((16384, 16384), -1),  # the seed's case
    ((1, 12, 512, 512), -1),  # attention scores
    ((1, 12, 128, 128), -1),
    ((1024, 4096), 0),  # a non-last reduction dim
]
QUICK_SHAPES = [((64, 2048), -1), ((256, 256), 0)]
# Extra points for `--calibrate` so `auto` generalizes between the sweep's shapes.
CALIBRATION_EXTRA = [((256, 256), -1), ((64, 4096), -1), ((1024, 1024), -1), ((8, 65536), -1), ((4096, 512), 0)]


def thread_counts() -> tuple[int, ...]:
    n = os.cpu_count() or 1
    return (1, n) if n > 1 else (1,)


def cases(kind: str) -> list[Case]:
    """Cases for kind "quick", "full" or "calibrate"."""
    shapes = {"quick": QUICK_SHAPES, "full": FULL_SHAPES, "calibrate": FULL_SHAPES + CALIBRATION_EXTRA}[kind]
    dtypes = ["float32"] + (["bfloat16"] if has_bf16() and kind != "quick" else [])
    return [Case(s, d, dt, t) for s, d in shapes for dt in dtypes for t in thread_counts()]
