"""The `inplace` group as a hand-written IREE executable: one dispatch that keeps exp(x - m) in the
output buffer and scales it there, one exp per element and no stack buffer. It computes in float32 from
x of any of `policy.IN_OUTPUT_DTYPES`; a 16-bit output holds z rounded to its dtype until the scale.

IREE's codegen cannot do this for a `flow.dispatch.region` (it recomputes exp: docs/benchmarks/exp_in_output),
so the group is a `stream.executable` written with scf/vector/memref ops, called by a `flow.dispatch`.
IREE still compiles it for the target CPU (vector width, `math.exp` expansion). Each workgroup takes a
block of rows of the softmax input seen as [rows, n]: per row, a max pass over x, a pass writing
z = exp(x - m) into the output while summing it (and prefetching the next row), and a pass scaling the
output by 1/l in place.
"""

from __future__ import annotations

import math

import torch

from .group import GroupSpec
from .group_mlir import ELEMENT_TYPES, WIDTH, Body, cast_through, float_literal, function_name, tensor_type, typed
from .quirks import MAX_OP
from .tags import step_tag

LANES = 64  # f32 lanes per vector op: 4 AVX-512 or 8 AVX2 registers, independent accumulators
ROW_BLOCK = 16384  # elements per workgroup at least: rows of n < ROW_BLOCK go ROW_BLOCK // n to a workgroup
# The kernel's binding convention, which `fxsoftmax.report` reads: binding 0 is read, binding 1 written.


def in_output_function(spec: GroupSpec, shape: list[int]) -> tuple[str, str]:
    """(function name, MLIR module text) of a `util.func` computing the group's softmax of x (sizes
    `shape`, -1 where dynamic) with one dispatch of a hand-written executable."""
    fn, definitions = in_output_definitions(spec, shape)
    return fn, f"module {{\n{definitions}\n}}"


def in_output_definitions(spec: GroupSpec, shape: list[int]) -> tuple[str, str]:
    """(function name, the executable and the private `util.func`), to put in a module."""
    r = spec.rank
    x_et, out_et = ELEMENT_TYPES[spec.x_dtype], ELEMENT_TYPES[spec.out_dtype]
    x_t, y_t = tensor_type(shape, x_et), tensor_type(shape, out_et)
    fn = function_name(spec, [x_t])
    tag = lambda step: f'loc("{step_tag(spec.site, spec.group, step)}":1:0)'  # noqa: E731
    lines = ["%c1 = arith.constant 1 : index"]
    dims = []
    for i, s in enumerate(shape):
        lines.append(f"%i{i} = arith.constant {i} : index")
        lines.append(f"%d{i} = tensor.dim %x, %i{i} : {x_t}")
        dims.append(f"%d{i}")
    lines.append("%rows0 = arith.constant 1 : index")
    for i in range(r - 1):
        lines.append(f"%rows{i + 1} = arith.muli %rows{i}, %d{i} : index")
    rows, n = f"%rows{r - 1}", dims[-1]
    sizes = [str(s) if s >= 0 else d for s, d in zip(shape, dims)]  # static sizes as literals (newer MLIR wants that)
    flat_dims = ["?" if any(s < 0 for s in shape[:-1]) else str(math.prod(shape[:-1])), "?" if shape[-1] < 0 else str(shape[-1])]
    flat_x, flat_y = (f"tensor<{flat_dims[0]}x{flat_dims[1]}x{et}>" for et in (x_et, out_et))
    reassoc = f"[[{', '.join(map(str, range(r - 1)))}], [{r - 1}]]"  # rank >= 2: leading dims -> rows
    if r == 1:
        lines.append(f"%flat = tensor.expand_shape %x [[0, 1]] output_shape [1, {sizes[0]}] : {x_t} into {flat_x}")
    else:
        lines.append(f"%flat = tensor.collapse_shape %x {reassoc} : {x_t} into {flat_x}")
    dyn_dims = [v for v, d in zip((rows, n), flat_dims) if d == "?"]
    lines += [
        f"%block = arith.constant {ROW_BLOCK} : index",
        f"%n1 = arith.maxui {n}, %c1 : index",
        "%per0 = arith.divui %block, %n1 : index",
        "%per = arith.maxui %per0, %c1 : index",
        f"%yflat = flow.dispatch @{fn}_exe::@{fn}_rows[{rows}, %per](%flat, {rows}, %per, {n}) : "
        f"({flat_x}{_sizes(dyn_dims)}, index, index, index) -> {flat_y}{_sizes(dyn_dims)} {tag('1234')}",
    ]
    if r == 1:
        lines.append(f"%y = tensor.collapse_shape %yflat [[0, 1]] : {flat_y} into {y_t}")
    else:
        lines.append(f"%y = tensor.expand_shape %yflat {reassoc} output_shape [{', '.join(sizes)}] : {flat_y} into {y_t}")
    body = "\n  ".join(lines)
    types = (x_et, ELEMENT_TYPES[spec.in_dtype], out_et)
    return fn, f"""{_executable(f"{fn}_exe", f"{fn}_rows", spec.safe, tag, flat_dims, types)}
util.func private @{fn}(%x: {x_t}) -> {y_t} {{
  {body}
  util.return %y : {y_t}
}}"""


def _sizes(dynamic: list[str]) -> str:
    return f"{{{', '.join(dynamic)}}}" if dynamic else ""


def _executable(name: str, entry: str, safe: bool, tag, flat_dims: list[str], types: tuple[str, str, str]) -> str:
    """The executable; `flat_dims` are the [rows, n] sizes ("?" where dynamic), static ones baked in;
    `types`: the element types of x, of what softmax sees, and of the output."""
    x_et, in_et, out_et = types
    vt = f"vector<{LANES}xf32>"
    lowest = float_literal(torch.finfo(torch.float32).min if safe else float("-inf"), "f32")
    tiny = float_literal(torch.finfo(torch.float32).tiny, "f32")
    finish = f"%l = arith.maxnumf %s, %tiny : f32 {tag('3')}" if safe else ""  # safe softmax: masked rows give 0
    total = "%l" if safe else "%s"
    # The layout leaves the offset open: IREE moves a result's offset within its allocation into the subspan
    # (two results in one buffer), and an identity layout would drop it.
    mem_x, mem_y = (f"memref<{flat_dims[0]}x{flat_dims[1]}x{et}, strided<[{flat_dims[1]}, 1], offset: ?>>" for et in (x_et, out_et))
    # While the exp pass works on this row from cache, fetch the next row's cache lines (this VM: 4096x16384
    # f32 65.5 -> 53.0 ms with 1 thread, 34.2 -> 27.2 ms with 2): the memory-bound max pass of the next row
    # then reads from cache, and memory traffic overlaps the exps.
    line_elements = 64 * 8 // WIDTH[x_et]  # elements per 64-byte cache line
    prefetch = "\n          ".join(
        f"%p{k} = arith.addi %j, %o{k} : index\n          memref.prefetch %X[%next, %p{k}], read, locality<3>, data : {mem_x}"
        for k in range(LANES // line_elements))
    offsets = "\n      ".join(f"%o{k} = arith.constant {line_elements * k} : index" for k in range(LANES // line_elements))
    dynamic = _sizes([v for v, d in zip(("%rows", "%n"), flat_dims) if d == "?"])

    body = Body()  # SSA names unique across the kernel's loads and stores

    def load(tensor: str, lanes: int, step: str) -> tuple[str, str]:
        """(lines, f32 value) reading x or y at [%r, %j]: a vector of `lanes`, or one element if 0."""
        mem, pad, memref, et, via = (("%X", "%zx", mem_x, x_et, in_et) if tensor == "x" else ("%Y", "%zy", mem_y, out_et, out_et))
        start = len(body.lines)
        v = body.emit(f"vector.transfer_read {mem}[%r, %j], {pad} {{in_bounds = [true]}} : {memref}, {typed(et, lanes)}" if lanes
                      else f"memref.load {mem}[%r, %j] : {memref}", "ld")
        v = cast_through(body, v, et, via, "f32", f" {tag(step)}", lanes)
        return "\n          ".join(body.lines[start:]), v

    def store_y(v: str, lanes: int, step: str) -> str:
        """Lines writing f32 `v` at [%r, %j] of the output."""
        start = len(body.lines)
        v = cast_through(body, v, "f32", out_et, out_et, f" {tag(step)}", lanes)
        write = (f"vector.transfer_write {v}, %Y[%r, %j] {{in_bounds = [true]}} : {typed(out_et, lanes)}, {mem_y}" if lanes
                 else f"memref.store {v}, %Y[%r, %j] : {mem_y}")
        return "\n          ".join([*body.lines[start:], write])

    max_v, max_v_f = load("x", LANES, "1")
    max_s, max_s_f = load("x", 0, "1")
    exp_v, exp_v_f = load("x", LANES, "2")
    exp_s, exp_s_f = load("x", 0, "2")
    scale_v, scale_v_f = load("y", LANES, "4")
    scale_s, scale_s_f = load("y", 0, "4")

    return f"""stream.executable private @{name} {{
  stream.executable.export public @{entry} workgroups(%rows: index, %per: index) -> (index, index, index) {{
    %count = arith.ceildivui %rows, %per : index
    %c1 = arith.constant 1 : index
    stream.return %count, %c1, %c1 : index, index, index
  }}
  builtin.module {{
    func.func @{entry}(%in: !stream.binding, %out: !stream.binding, %rows: index, %per: index, %n: index) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %lanes = arith.constant {LANES} : index
      {offsets}
      %lowest = arith.constant {lowest} : f32
      %zero = arith.constant 0.0 : f32
      %zx = arith.constant 0.0 : {x_et}
      %zy = arith.constant 0.0 : {out_et}
      %one = arith.constant 1.0 : f32
      %tiny = arith.constant {tiny} : f32
      %vlowest = vector.broadcast %lowest : f32 to {vt}
      %vzero = vector.broadcast %zero : f32 to {vt}
      %X = stream.binding.subspan %in[%c0] : !stream.binding -> {mem_x}{dynamic}
      %Y = stream.binding.subspan %out[%c0] : !stream.binding -> {mem_y}{dynamic}
      %wg = hal.interface.workgroup.id[0] : index
      %r0 = arith.muli %wg, %per : index
      %r1a = arith.addi %r0, %per : index
      %r1 = arith.minui %r1a, %rows : index
      %tail = arith.remui %n, %lanes : index
      %nv = arith.subi %n, %tail : index
      scf.for %r = %r0 to %r1 step %c1 {{
        %vm = scf.for %j = %c0 to %nv step %lanes iter_args(%acc = %vlowest) -> ({vt}) {{
          {max_v}
          %a = {MAX_OP} %acc, {max_v_f} : {vt} {tag('1')}
          scf.yield %a : {vt}
        }}
        %m0 = vector.reduction <maxnumf>, %vm : {vt} into f32 {tag('1')}
        %m = scf.for %j = %nv to %n step %c1 iter_args(%acc = %m0) -> (f32) {{
          {max_s}
          %a = {MAX_OP} %acc, {max_s_f} : f32 {tag('1')}
          scf.yield %a : f32
        }}
        %vmb = vector.broadcast %m : f32 to {vt}
        %next0 = arith.addi %r, %c1 : index
        %last = arith.subi %rows, %c1 : index
        %next = arith.minui %next0, %last : index
        %vs = scf.for %j = %c0 to %nv step %lanes iter_args(%acc = %vzero) -> ({vt}) {{
          {exp_v}
          %d = arith.subf {exp_v_f}, %vmb : {vt} {tag('2')}
          {prefetch}
          %z = math.exp %d : {vt} {tag('2')}
          {store_y('%z', LANES, '2')}
          %a = arith.addf %acc, %z : {vt} {tag('3')}
          scf.yield %a : {vt}
        }}
        %s0 = vector.reduction <add>, %vs : {vt} into f32 {tag('3')}
        %s = scf.for %j = %nv to %n step %c1 iter_args(%acc = %s0) -> (f32) {{
          {exp_s}
          %d = arith.subf {exp_s_f}, %m : f32 {tag('2')}
          %z = math.exp %d : f32 {tag('2')}
          {store_y('%z', 0, '2')}
          %a = arith.addf %acc, %z : f32 {tag('3')}
          scf.yield %a : f32
        }}
        {finish}
        %inv = arith.divf %one, {total} : f32 {tag('4')}
        %vinv = vector.broadcast %inv : f32 to {vt}
        scf.for %j = %c0 to %nv step %lanes {{
          {scale_v}
          %y = arith.mulf {scale_v_f}, %vinv : {vt} {tag('4')}
          {store_y('%y', LANES, '4')}
        }}
        scf.for %j = %nv to %n step %c1 {{
          {scale_s}
          %y = arith.mulf {scale_s_f}, %inv : f32 {tag('4')}
          {store_y('%y', 0, '4')}
        }}
      }}
      return
    }}
  }}
}}"""
