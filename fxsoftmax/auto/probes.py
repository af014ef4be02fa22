"""The small IREE programs `auto`'s machine constants are measured with (fxsoftmax.auto.machine). Each
writes its result into storage the caller provides (IREE's `iree.abi.output`), so a call touches no fresh
pages: what the modules fxsoftmax builds do too (fxsoftmax.backends.entry)."""

from __future__ import annotations

from ..core.dtypes import dtype
from ..core.group import GroupSpec
from ..core.policy import IN_OUTPUT, IN_OUTPUT_PLAN
from ..lowering.inplace import in_output_definitions

DTYPES = {d: dtype(d).mlir for d in ("float32", "bfloat16")}  # what the probes measure
# Sizes: the memory probes move 256 MiB each way (beyond the caches of the machines measured so far); the
# in-cache probes re-read one 64 KiB f32 row per thread REPEATS times inside one dispatch.
STREAM = 1 << 26
MID = 1 << 21  # 8 MiB of f32: beyond L2, within the last-level caches of the machines measured so far
ROWS, ROW, REPEATS = 8, 16384, 256
TINY = 64
IN_OUTPUT_SHAPE = (32, 4096)  # `inplace`'s own kernel in cache (512 KiB of f32), in each dtype
IN_OUTPUT_SHORT_ROWS = (2048, 64)  # the same elements in short rows (f32): the kernel's cost per row
VERSION = 6  # part of the machines' cache key: constants measured by other probes are measured again


STORAGE = "%out: !hal.buffer {iree.abi.output = 0 : index}"  # the result's storage, from the caller


def _reduce(name: str, arg: str, out: str, dims: str, maps: tuple[str, str], iters: str, body: str, extra: str = "",
            public: bool = True) -> str:
    """A function summing `body`'s value (%v, f32) over the reduction dims of one linalg.generic.
    `extra` is a second, f32 operand (a tensor of zeros) indexed by the repeat dim. A public one takes
    its result's storage; a private one is for other probes to call."""
    eltype = arg.rsplit("x", 1)[-1].rstrip(">")
    ins, types, amap = "%a", arg, f"affine_map<({dims}) -> ({maps[0]})>"
    args, block = f"%a: {arg}", f"%b: {eltype}"
    if extra:
        ins, types, amap = "%a, %k", f"{arg}, {extra}", f"{amap}, affine_map<({dims}) -> (k)>"
        args, block = f"{args}, %k: {extra}", f"{block}, %kk: f32"
    head = f"func.func @{name}({args}, {STORAGE})" if public else f"func.func private @{name}({args})"
    return f"""
  {head} -> {out} {{
    %zero = arith.constant 0.0 : f32
    %empty = tensor.empty() : {out}
    %init = linalg.fill ins(%zero : f32) outs(%empty : {out}) -> {out}
    %r = linalg.generic {{indexing_maps = [{amap}, affine_map<({dims}) -> ({maps[1]})>], iterator_types = [{iters}]}}
      ins({ins} : {types}) outs(%init : {out}) {{
      ^bb0({block}, %acc: f32):
        {body}
        %s = arith.addf %v, %acc : f32
        linalg.yield %s : f32
    }} -> {out}
    return %r : {out}
  }}"""


def _stream(name: str, n: int) -> str:
    t = f"tensor<{n}xf32>"
    return f"""
  func.func @{name}(%a: {t}, {STORAGE}) -> {t} {{
    %empty = tensor.empty() : {t}
    %r = linalg.generic {{indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>], iterator_types = ["parallel"]}}
      ins(%a : {t}) outs(%empty : {t}) {{
      ^bb0(%b: f32, %o: f32):
        %v = arith.addf %b, %b : f32
        linalg.yield %v : f32
    }} -> {t}
    return %r : {t}
  }}"""


def _outer_exp(t: str) -> str:
    """exp(x - m) over a [512, 4096] tensor in `t` whose m was reduced over the outer dim (m[j]): the
    elementwise pass of a softmax over an outer dim, read and written in `t`."""
    x = f"tensor<{MID // 4096}x4096x{t}>"
    load = "%f = arith.extf %b : bf16 to f32" if t == "bf16" else "%f = arith.addf %b, %zero : f32"
    store = "%v = arith.truncf %e : f32 to bf16" if t == "bf16" else "%v = arith.addf %e, %zero : f32"
    return f"""
  func.func @outer_exp_{t}(%a: {x}, %m: tensor<4096xf32>, {STORAGE}) -> {x} {{
    %zero = arith.constant 0.0 : f32
    %empty = tensor.empty() : {x}
    %r = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (j)>, affine_map<(i, j) -> (i, j)>],
                         iterator_types = ["parallel", "parallel"]}} ins(%a, %m : {x}, tensor<4096xf32>) outs(%empty : {x}) {{
      ^bb0(%b: {t}, %mm: f32, %o: {t}):
        {load}
        %d = arith.subf %f, %mm : f32
        %e = math.exp %d : f32
        {store}
        linalg.yield %v : {t}
    }} -> {x}
    return %r : {x}
  }}"""


def module() -> str:
    """Every probe, as public functions named for what they measure."""
    funcs = []
    for t in DTYPES.values():
        # %kk (zeros the compiler cannot see) keeps each repeat's work inside the repeat loop
        load = ("%f = arith.extf %b : bf16 to f32\n        %u = arith.addf %f, %kk : f32" if t == "bf16"
                else "%u = arith.addf %b, %kk : f32")
        for kind, op in (("pass", "%v = arith.addf %u, %u : f32"), ("exp", "%v = math.exp %u : f32")):
            funcs.append(_reduce(f"{kind}_{t}", f"tensor<{ROWS}x{ROW}x{t}>", f"tensor<{ROWS}xf32>", "r, k, j", ("r, j", "r"),
                                 '"parallel", "reduction", "reduction"', f"{load}\n        {op}", f"tensor<{REPEATS}xf32>"))
    double, tiny = "%v = arith.addf %b, %b : f32", f"tensor<{TINY}x{TINY}xf32>"
    row_sum = lambda name, rows, cols: _reduce(name, f"tensor<{rows}x{cols}xf32>", f"tensor<{rows}xf32>", "i, j",  # noqa: E731
                                               ("i, j", "i"), '"parallel", "reduction"', double)
    funcs += [row_sum("read", STREAM // ROW, ROW), row_sum("read_mid", MID // ROW, ROW), row_sum("one", TINY, TINY)]
    funcs.append(_reduce("rows_in", tiny, f"tensor<{TINY}xf32>", "i, j", ("i, j", "i"), '"parallel", "reduction"', double, public=False))
    funcs.append(_reduce("total_in", f"tensor<{TINY}xf32>", "tensor<f32>", "i", ("i", ""), '"reduction"', double, public=False))
    for t in DTYPES.values():  # the same elements along the outer dim in each dtype
        load = "%f = arith.extf %b : bf16 to f32\n        %v = arith.addf %f, %f : f32" if t == "bf16" else double
        funcs.append(_reduce(f"read_columns_{t}", f"tensor<{MID // 4096}x4096x{t}>", "tensor<4096xf32>", "i, j", ("i, j", "j"),
                             '"reduction", "parallel"', load))
    funcs.append(_stream("stream", STREAM) + _stream("stream_mid", MID))
    funcs += [_outer_exp(t) for t in DTYPES.values()]
    funcs.append(f"""
  func.func @two(%a: {tiny}, {STORAGE}) -> tensor<f32> {{
    %s = call @rows_in(%a) : ({tiny}) -> tensor<{TINY}xf32>
    %t = call @total_in(%s) : (tensor<{TINY}xf32>) -> tensor<f32>
    return %t : tensor<f32>
  }}""")
    return "module {" + "".join(funcs) + _in_output_probes() + "\n}\n"


def _in_output_probes() -> str:
    """`inplace`'s kernel for each dtype on IN_OUTPUT_SHAPE, as public functions `in_output_<t>`, and for f32 on
    IN_OUTPUT_SHORT_ROWS, as `in_output_rows_f32`."""
    shapes = [(f"in_output_{t}", name, IN_OUTPUT_SHAPE) for name, t in DTYPES.items()]
    return "".join(_in_output_probe(*s) for s in [*shapes, ("in_output_rows_f32", "float32", IN_OUTPUT_SHORT_ROWS)])


def _in_output_probe(fn_name: str, dtype_name: str, shape: tuple[int, int]) -> str:
    spec = GroupSpec(site=f"probe_{fn_name}", group=1, steps=tuple(IN_OUTPUT_PLAN), dim=1, shape=shape, inputs=("x",),
                     outputs=("y",), x_dtype=dtype_name, in_dtype=dtype_name, compute_dtype="float32", out_dtype=dtype_name,
                     kernel=IN_OUTPUT)
    fn, definitions = in_output_definitions(spec, list(shape))
    ty = f"tensor<{shape[0]}x{shape[1]}x{dtype(dtype_name).mlir}>"
    return definitions + f"""
  util.func public @{fn_name}(%x: {ty}, {STORAGE}) -> {ty} {{
    %y = util.call @{fn}(%x) : ({ty}) -> {ty}
    util.return %y : {ty}
  }}"""
