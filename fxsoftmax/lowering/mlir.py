"""MLIR text helpers shared by the group region and the `inplace` kernel: SSA names, types, literals,
casts, affine maps."""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from ..core.dtypes import dtype
from ..core.group import GroupSpec


class Names:
    """Fresh SSA names, unique within one function."""

    def __init__(self) -> None:
        self.n = 0

    def fresh(self, hint: str = "v") -> str:
        self.n += 1
        return f"%{hint}{self.n}"


class Block:
    """Lines of MLIR, naming what they define from a shared `Names`."""

    def __init__(self, names: Names | None = None) -> None:
        self.names = names or Names()
        self.lines: list[str] = []

    def fresh(self, hint: str = "v") -> str:
        return self.names.fresh(hint)

    def emit(self, text: str, hint: str = "v") -> str:
        name = self.fresh(hint)
        self.lines.append(f"{name} = {text}")
        return name

    def nested(self) -> "Block":
        """A block for a nested region, naming from the same counter."""
        return Block(self.names)


def element_type(dtype_name: str) -> str:
    return dtype(dtype_name).mlir


def width(et: str) -> int:
    return dtype(et).bits


def float_literal(value: float, et: str) -> str:
    """An exact MLIR float literal (hex bit pattern) of `value` in element type `et`."""
    d = dtype(et)
    bits = torch.tensor([value], dtype=d.torch).view(dtype(f"i{d.bits}").torch).item()
    return f"0x{bits & ((1 << d.bits) - 1):0{d.bits // 4}X}"


def typed(et: str, lanes: int = 0) -> str:
    """Element type `et`, or a vector of `lanes` of it."""
    return f"vector<{lanes}x{et}>" if lanes else et


def tensor_type(shape: Sequence[int], et: str) -> str:
    """`tensor<...>` with -1 sizes as `?`."""
    return "tensor<" + "".join(("?" if s < 0 else str(s)) + "x" for s in shape) + f"{et}>"


def element_of(tensor: str) -> str:
    """The element type of a `tensor<...>` type."""
    return tensor[:-1].rsplit("x", 1)[-1].replace("tensor<", "")


def identity_map(rank: int) -> str:
    idx = ", ".join(f"d{i}" for i in range(rank))
    return f"affine_map<({idx}) -> ({idx})>"


def parallel(rank: int) -> str:
    return ", ".join(['"parallel"'] * rank)


def keepdim_reassociation(rank: int, dim: int) -> str:
    """Reassociation between a tensor reduced along `dim` and its keepdim form (the unit dim joins a neighbour)."""
    groups = [[i] for i in range(rank) if i != dim]
    if groups:
        groups[max(0, dim - 1) if dim > 0 else 0].append(dim)
        groups = [sorted(g) for g in groups]
    return "[" + ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups) + "]"


def function_name(spec: GroupSpec, arg_types: Sequence[str]) -> str:
    """A name unique to the group and its argument types, readable in IREE's dumps."""
    key = hashlib.sha1(f"{spec.to_json()}|{list(arg_types)}".encode()).hexdigest()[:16]
    ident = "".join(c if c.isalnum() or c == "_" else "_" for c in spec.site)
    return f"fxsoftmax_{ident}_g{spec.group}_{key}"


def convert(b: Block, v: str, src: str, dst: str, loc: str, lanes: int = 0) -> str:
    """`v` (element type `src`) as `dst`."""
    if src == dst:
        return v
    if src == "i1":
        return b.emit(f"arith.uitofp {v} : {typed('i1', lanes)} to {typed(dst, lanes)}{loc}")
    if width(src) == width(dst):  # f16 <-> bf16 through f32
        v, src = b.emit(f"arith.extf {v} : {typed(src, lanes)} to {typed('f32', lanes)}{loc}"), "f32"
    op = "arith.extf" if width(src) < width(dst) else "arith.truncf"
    return b.emit(f"{op} {v} : {typed(src, lanes)} to {typed(dst, lanes)}{loc}")


def cast_through(b: Block, v: str, src: str, via: str, dst: str, loc: str, lanes: int = 0) -> str:
    """`v` (element type `src`, or vectors of `lanes` of it) cast to `via`, then to `dst`: softmax(x, dtype=via)
    rounds x to `via` even when it computes in a wider `dst`."""
    if (src, via, dst) == ("f32", "bf16", "f32"):  # IREE folds extf(truncf(v)): quirks.BF16_ROUND_TRIP_FIXED_IN
        return round_to_bf16(b, v, loc, lanes)
    return convert(b, convert(b, v, src, via, loc, lanes), via, dst, loc, lanes)


def round_to_bf16(b: Block, v: str, loc: str, lanes: int) -> str:
    """f32 `v` rounded to the nearest bf16 value (ties to even, NaN kept), still as f32, with integer ops."""
    ftype, itype = typed("f32", lanes), typed("i32", lanes)
    const = lambda k: b.emit(f"arith.constant dense<{k}> : {itype}" if lanes else f"arith.constant {k} : i32", "k")  # noqa: E731
    bits = b.emit(f"arith.bitcast {v} : {ftype} to {itype}{loc}")
    odd = b.emit(f"arith.andi {b.emit(f'arith.shrui {bits}, {const(16)} : {itype}{loc}')}, {const(1)} : {itype}{loc}")
    rounded = b.emit(f"arith.addi {bits}, {b.emit(f'arith.addi {odd}, {const(0x7FFF)} : {itype}{loc}')} : {itype}{loc}")
    value = b.emit(f"arith.bitcast {b.emit(f'arith.andi {rounded}, {const(-65536)} : {itype}{loc}')} : {itype} to {ftype}{loc}")
    nan = b.emit(f"arith.cmpf uno, {v}, {v} : {ftype}{loc}")
    return b.emit(f"arith.select {nan}, {v}, {value} : {typed('i1', lanes)}, {ftype}{loc}")
