"""The `inplace` group as a hand-written IREE executable: one dispatch that keeps exp(x - m) in the
output buffer and scales it there, one exp per element and no stack buffer. It computes in float32 from
x of any of `core.policy.IN_OUTPUT_DTYPES`; a 16-bit output holds z rounded to its dtype until the scale.

IREE's codegen cannot do this for a `flow.dispatch.region` (it recomputes exp: scripts/exp_in_output.py),
so the group is a `stream.executable` (templates/inplace.mlir) written with scf/vector/memref ops and
called by a `flow.dispatch`. IREE still compiles it for the target CPU (vector width, `math.exp`).
"""

from __future__ import annotations

import math
import os
from string import Template

import torch

from ..core.group import GroupSpec
from ..core.tags import step_tag
from ..quirks import MAX_OP
from .mlir import Block, cast_through, element_type, float_literal, function_name, tensor_type, typed, width

LANES = 64  # f32 lanes per vector op: 4 AVX-512 or 8 AVX2 registers, independent accumulators
ROW_BLOCK = 16384  # elements per workgroup at least: rows of n < ROW_BLOCK go ROW_BLOCK // n to a workgroup
# The kernel's binding convention, which the report reads: binding 0 is read, binding 1 written.
with open(os.path.join(os.path.dirname(__file__), "templates", "inplace.mlir")) as _f:
    TEMPLATE = Template(_f.read())


def in_output_function(spec: GroupSpec, shape: list[int]) -> tuple[str, str]:
    """(function name, MLIR module text) of a `util.func` computing the group's softmax of x (sizes
    `shape`, -1 where dynamic) with one dispatch of the hand-written executable."""
    fn, definitions = in_output_definitions(spec, shape)
    return fn, f"module {{\n{definitions}\n}}"


def in_output_definitions(spec: GroupSpec, shape: list[int]) -> tuple[str, str]:
    """(function name, the executable and the private `util.func` calling it), to put in a module."""
    fn = function_name(spec, [tensor_type(shape, element_type(spec.x_dtype))])
    flat_dims = ["?" if any(s < 0 for s in shape[:-1]) else str(math.prod(shape[:-1])), "?" if shape[-1] < 0 else str(shape[-1])]
    executable = _executable(spec, f"{fn}_exe", f"{fn}_rows", flat_dims)
    return fn, f"{executable}\n{_caller(spec, shape, fn, flat_dims)}"


def _tag(spec: GroupSpec, step: str) -> str:
    return f'loc("{step_tag(spec.site, spec.group, step)}":1:0)'


def _sizes(dynamic: list[str]) -> str:
    return f"{{{', '.join(dynamic)}}}" if dynamic else ""


def _caller(spec: GroupSpec, shape: list[int], fn: str, flat_dims: list[str]) -> str:
    """The `util.func` that views x as [rows, n], dispatches the executable over blocks of rows, and
    views the result back."""
    r = spec.rank
    x_et, out_et = element_type(spec.x_dtype), element_type(spec.out_dtype)
    x_t, y_t = tensor_type(shape, x_et), tensor_type(shape, out_et)
    lines = ["%c1 = arith.constant 1 : index"]
    for i in range(r):
        lines += [f"%i{i} = arith.constant {i} : index", f"%d{i} = tensor.dim %x, %i{i} : {x_t}"]
    lines.append("%rows0 = arith.constant 1 : index")
    lines += [f"%rows{i + 1} = arith.muli %rows{i}, %d{i} : index" for i in range(r - 1)]
    rows, n = f"%rows{r - 1}", f"%d{r - 1}"
    sizes = [str(s) if s >= 0 else f"%d{i}" for i, s in enumerate(shape)]  # static sizes as literals (newer MLIR wants that)
    flat_x, flat_y = (f"tensor<{flat_dims[0]}x{flat_dims[1]}x{et}>" for et in (x_et, out_et))
    reassoc = f"[[{', '.join(map(str, range(r - 1)))}], [{r - 1}]]"  # rank >= 2: leading dims -> rows
    lines.append(f"%flat = tensor.expand_shape %x [[0, 1]] output_shape [1, {sizes[0]}] : {x_t} into {flat_x}" if r == 1
                 else f"%flat = tensor.collapse_shape %x {reassoc} : {x_t} into {flat_x}")
    dyn = _sizes([v for v, d in zip((rows, n), flat_dims) if d == "?"])
    lines += [
        f"%block = arith.constant {ROW_BLOCK} : index",
        f"%n1 = arith.maxui {n}, %c1 : index",
        "%per0 = arith.divui %block, %n1 : index",
        "%per = arith.maxui %per0, %c1 : index",
        f"%yflat = flow.dispatch @{fn}_exe::@{fn}_rows[{rows}, %per](%flat, {rows}, %per, {n}) : "
        f"({flat_x}{dyn}, index, index, index) -> {flat_y}{dyn} {_tag(spec, '1234')}",
    ]
    lines.append(f"%y = tensor.collapse_shape %yflat [[0, 1]] : {flat_y} into {y_t}" if r == 1
                 else f"%y = tensor.expand_shape %yflat {reassoc} output_shape [{', '.join(sizes)}] : {flat_y} into {y_t}")
    body = "\n  ".join(lines)
    return f"util.func private @{fn}(%x: {x_t}) -> {y_t} {{\n  {body}\n  util.return %y : {y_t}\n}}"


def _executable(spec: GroupSpec, name: str, entry: str, flat_dims: list[str]) -> str:
    """The executable; `flat_dims` are the [rows, n] sizes ("?" where dynamic), static ones baked in."""
    x_et, in_et, out_et = (element_type(d) for d in (spec.x_dtype, spec.in_dtype, spec.out_dtype))
    # The layout leaves the offset open: IREE moves a result's offset within its allocation into the subspan
    # (two results in one buffer), and an identity layout would drop it.
    mem_x, mem_y = (f"memref<{flat_dims[0]}x{flat_dims[1]}x{et}, strided<[{flat_dims[1]}, 1], offset: ?>>" for et in (x_et, out_et))
    # While the exp pass works on this row from cache, fetch the next row's cache lines (a Xeon VM: 4096x16384
    # f32 65.5 -> 53.0 ms with 1 thread, 34.2 -> 27.2 ms with 2): the memory-bound max pass of the next row
    # then reads from cache, and memory traffic overlaps the exps.
    line_elements = 64 * 8 // width(x_et)  # elements per 64-byte cache line
    lines = range(LANES // line_elements)
    fragments = dict(
        name=name, entry=entry, lanes=LANES, vt=f"vector<{LANES}xf32>", x_et=x_et, out_et=out_et, mem_x=mem_x, mem_y=mem_y,
        dynamic=_sizes([v for v, d in zip(("%rows", "%n"), flat_dims) if d == "?"]), max_op=MAX_OP,
        lowest=float_literal(torch.finfo(torch.float32).min if spec.safe else float("-inf"), "f32"),
        tiny=float_literal(torch.finfo(torch.float32).tiny, "f32"),
        offsets="\n      ".join(f"%o{k} = arith.constant {line_elements * k} : index" for k in lines),
        prefetch="\n          ".join(f"%p{k} = arith.addi %j, %o{k} : index\n          "
                                     f"memref.prefetch %X[%next, %p{k}], read, locality<3>, data : {mem_x}" for k in lines),
        # safe softmax: fully masked rows give 0
        finish=f"%l = arith.maxnumf %s, %tiny : f32 {_tag(spec, '3')}" if spec.safe else "", total="%l" if spec.safe else "%s",
        **{f"tag{k}": _tag(spec, str(k)) for k in range(1, 5)},
    )
    code = _Memory(spec, mem_x, mem_y, (x_et, in_et, out_et))  # SSA names unique across the kernel's loads and stores
    for key, tensor, step in (("max", "x", "1"), ("exp", "x", "2"), ("scale", "y", "4")):
        fragments[f"{key}_v"], fragments[f"{key}_v_f"] = code.load(tensor, LANES, step)
        fragments[f"{key}_s"], fragments[f"{key}_s_f"] = code.load(tensor, 0, step)
    for key, value, step in (("z", "%z", "2"), ("y", "%y", "4")):
        fragments[f"store_{key}_v"], fragments[f"store_{key}_s"] = code.store(value, LANES, step), code.store(value, 0, step)
    return TEMPLATE.substitute(fragments)


class _Memory:
    """Loads of x or y as f32 and stores of f32 into y, with the dtype conversions between."""

    def __init__(self, spec: GroupSpec, mem_x: str, mem_y: str, types: tuple[str, str, str]):
        self.spec, self.mem_x, self.mem_y, self.types = spec, mem_x, mem_y, types
        self.block = Block()

    def load(self, tensor: str, lanes: int, step: str) -> tuple[str, str]:
        """(lines, f32 value) reading x or y at [%r, %j]: a vector of `lanes`, or one element if 0."""
        x_et, in_et, out_et = self.types
        mem, pad, memref, et, via = (("%X", "%zx", self.mem_x, x_et, in_et) if tensor == "x" else ("%Y", "%zy", self.mem_y, out_et, out_et))
        b, start = self.block, len(self.block.lines)
        v = b.emit(f"vector.transfer_read {mem}[%r, %j], {pad} {{in_bounds = [true]}} : {memref}, {typed(et, lanes)}" if lanes
                   else f"memref.load {mem}[%r, %j] : {memref}", "ld")
        v = cast_through(b, v, et, via, "f32", f" {_tag(self.spec, step)}", lanes)
        return "\n          ".join(b.lines[start:]), v

    def store(self, value: str, lanes: int, step: str) -> str:
        """Lines writing f32 `value` at [%r, %j] of the output."""
        out_et = self.types[2]
        b, start = self.block, len(self.block.lines)
        v = cast_through(b, value, "f32", out_et, out_et, f" {_tag(self.spec, step)}", lanes)
        write = (f"vector.transfer_write {v}, %Y[%r, %j] {{in_bounds = [true]}} : {typed(out_et, lanes)}, {self.mem_y}" if lanes
                 else f"memref.store {v}, %Y[%r, %j] : {self.mem_y}")
        return "\n          ".join([*b.lines[start:], write])
