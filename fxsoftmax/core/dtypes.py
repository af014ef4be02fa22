"""The dtypes fxsoftmax meets, once: name, torch dtype, MLIR element type, size, and the tolerance a
softmax computed in it is held to against eager PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    name: str  # torch's name without "torch."
    torch: torch.dtype
    mlir: str  # MLIR element type
    bits: int
    tolerance: float | None = None  # max abs error of a softmax result vs eager (floats only)

    @property
    def bytes(self) -> int:
        return max(self.bits // 8, 1)

    @property
    def is_float(self) -> bool:
        return self.torch.is_floating_point


_ALL = (
    DType("float32", torch.float32, "f32", 32, 1e-5),
    DType("float16", torch.float16, "f16", 16, 2**-10),  # one unit in the last place at 1.0
    DType("bfloat16", torch.bfloat16, "bf16", 16, 2**-7),
    DType("float64", torch.float64, "f64", 64, 1e-12),
    DType("int64", torch.int64, "i64", 64),
    DType("int32", torch.int32, "i32", 32),
    DType("int16", torch.int16, "i16", 16),
    DType("int8", torch.int8, "i8", 8),
    DType("uint8", torch.uint8, "ui8", 8),
    DType("bool", torch.bool, "i1", 1),
)
BY_NAME = {d.name: d for d in _ALL}
BY_MLIR = {d.mlir: d for d in _ALL}
BY_TORCH = {d.torch: d for d in _ALL}
LOW_PRECISION = (torch.float16, torch.bfloat16)  # computed in float32, as PyTorch does


def dtype(key: str | torch.dtype) -> DType:
    """A dtype by torch dtype, name ("float32") or MLIR element type ("f32")."""
    found = BY_TORCH.get(key) if isinstance(key, torch.dtype) else BY_NAME.get(key) or BY_MLIR.get(key)
    if found is None:
        raise ValueError(f"unknown dtype {key!r}; accepted: {', '.join(BY_NAME)} (or {', '.join(BY_MLIR)})")
    return found


def dtype_name(t: torch.dtype) -> str:
    return str(t).replace("torch.", "")


def torch_dtype(name: str) -> torch.dtype:
    return dtype(name).torch


def compute_dtype(t: torch.dtype) -> torch.dtype:
    """What a softmax over `t` computes in."""
    return torch.float32 if t in LOW_PRECISION else t
