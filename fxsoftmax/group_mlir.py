"""A plan group as MLIR: one `flow.dispatch.region` holding the group's steps as `linalg.generic`s.

IREE keeps a pre-formed dispatch region as one dispatch, and its softmax raising only matches chains
outside regions, so each group becomes exactly one dispatch with IREE's default flags. Every float op
of a step carries the step's tag as its location (`fxsoftmax.tags`); ops of pulled-in producers carry
none, so the report lists them as fused producers.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from .group import GroupSpec
from .policy import IN_OUTPUT
from .quirks import MAX_OP
from .tags import step_tag

ELEMENT_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "bool": "i1"}
WIDTH = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16}
_BITS_DTYPE = {"f64": torch.int64, "f32": torch.int32, "f16": torch.int16, "bf16": torch.int16}
_TORCH = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def float_literal(value: float, et: str) -> str:
    """An exact MLIR float literal (hex bit pattern) of `value` in element type `et`."""
    bits = torch.tensor([value], dtype=_TORCH[et]).view(_BITS_DTYPE[et]).item()
    width = WIDTH[et]
    return f"0x{bits & ((1 << width) - 1):0{width // 4}X}"


class Body:
    """Lines of one function, with fresh SSA names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def fresh(self, hint: str = "v") -> str:
        self.n += 1
        return f"%{hint}{self.n}"

    def emit(self, text: str, hint: str = "v") -> str:
        name = self.fresh(hint)
        self.lines.append(f"{name} = {text}")
        return name


def typed(et: str, lanes: int = 0) -> str:
    """Element type `et`, or a vector of `lanes` of it."""
    return f"vector<{lanes}x{et}>" if lanes else et


def _convert(b: Body, v: str, src: str, dst: str, loc: str, lanes: int = 0) -> str:
    if src == dst:
        return v
    if src == "i1":
        return b.emit(f"arith.uitofp {v} : {typed('i1', lanes)} to {typed(dst, lanes)}{loc}")
    if WIDTH[src] == WIDTH[dst]:  # f16 <-> bf16 through f32
        v, src = b.emit(f"arith.extf {v} : {typed(src, lanes)} to {typed('f32', lanes)}{loc}"), "f32"
    op = "arith.extf" if WIDTH[src] < WIDTH[dst] else "arith.truncf"
    return b.emit(f"{op} {v} : {typed(src, lanes)} to {typed(dst, lanes)}{loc}")


def cast_through(b: Body, v: str, src: str, via: str, dst: str, loc: str, lanes: int = 0) -> str:
    """`v` (element type `src`, or vectors of `lanes` of it) cast to `via`, then to `dst`: softmax(x, dtype=via)
    rounds x to `via` even when it computes in a wider `dst`."""
    if (src, via, dst) == ("f32", "bf16", "f32"):  # IREE folds extf(truncf(v)): quirks.BF16_ROUND_TRIP_FIXED_IN
        return _round_to_bf16(b, v, loc, lanes)
    return _convert(b, _convert(b, v, src, via, loc, lanes), via, dst, loc, lanes)


def _round_to_bf16(b: Body, v: str, loc: str, lanes: int) -> str:
    """f32 `v` rounded to the nearest bf16 value (ties to even, NaN kept), still as f32, with integer ops."""
    ftype, itype = typed("f32", lanes), typed("i32", lanes)
    const = lambda k: b.emit(f"arith.constant dense<{k}> : {itype}" if lanes else f"arith.constant {k} : i32", "k")  # noqa: E731
    bits = b.emit(f"arith.bitcast {v} : {ftype} to {itype}{loc}")
    odd = b.emit(f"arith.andi {b.emit(f'arith.shrui {bits}, {const(16)} : {itype}{loc}')}, {const(1)} : {itype}{loc}")
    rounded = b.emit(f"arith.addi {bits}, {b.emit(f'arith.addi {odd}, {const(0x7FFF)} : {itype}{loc}')} : {itype}{loc}")
    value = b.emit(f"arith.bitcast {b.emit(f'arith.andi {rounded}, {const(-65536)} : {itype}{loc}')} : {itype} to {ftype}{loc}")
    nan = b.emit(f"arith.cmpf uno, {v}, {v} : {ftype}{loc}")
    return b.emit(f"arith.select {nan}, {v}, {value} : {typed('i1', lanes)}, {ftype}{loc}")


def group_function(spec: GroupSpec, inputs: Sequence[tuple[Sequence[int], str]]) -> tuple[str, str]:
    """(function name, MLIR module text) of a `util.func` taking the group's inputs (sizes with -1 for
    dynamic, element type) and returning its outputs, computed in one `flow.dispatch.region`."""
    if spec.kernel == IN_OUTPUT:
        from .kernel_mlir import in_output_function

        return in_output_function(spec, list(inputs[0][0]))
    r, d = spec.rank, spec.dim
    et = ELEMENT_TYPES[spec.compute_dtype]
    b = Body()
    idx = ", ".join(f"d{i}" for i in range(r))
    kept = [i for i in range(r) if i != d]
    full_map = f"affine_map<({idx}) -> ({idx})>"
    red_map = f"affine_map<({idx}) -> ({', '.join(f'd{i}' for i in kept)})>"
    par = ", ".join(['"parallel"'] * r)
    red_iters = ", ".join('"reduction"' if i == d else '"parallel"' for i in range(r))

    arg_types = [tensor_type(shape, elt) for shape, elt in inputs]
    args = [f"%a{i}" for i in range(len(inputs))]
    # sizes of x: static from the spec, dynamic ones read from an input that has them
    sizes: list[str] = []
    for i in range(r):
        if spec.shape[i] >= 0:
            sizes.append(str(spec.shape[i]))
            continue
        for k, ((shape, _), name) in enumerate(zip(inputs, spec.inputs)):
            j = i - (r - len(shape))
            if j >= 0 and shape[j] < 0 and not (name in ("m", "l") and i == d):
                c = b.emit(f"arith.constant {j} : index", "c")
                sizes.append(b.emit(f"tensor.dim {args[k]}, {c} : {arg_types[k]}", "n"))
                break
        else:
            raise ValueError(f"fxsoftmax group {spec.site}:g{spec.group}: no input gives the size of dim {i}")
    dyn_full = [s for s in sizes if s.startswith("%")]
    dyn_red = [s for i, s in enumerate(sizes) if s.startswith("%") and i != d]
    full_t = lambda e: "tensor<" + "".join(("?" if s.startswith("%") else s) + "x" for s in sizes) + f"{e}>"  # noqa: E731
    red_t = lambda e: "tensor<" + "".join(("?" if sizes[i].startswith("%") else sizes[i]) + "x" for i in kept) + f"{e}>"  # noqa: E731
    reassoc = _keepdim_reassociation(r, d)

    values: dict[str, str] = {}
    leaves: dict[str, tuple[str, str, str]] = {}  # producer leaf -> (value, type, indexing map), outside the region
    for k, name in enumerate(spec.inputs):
        if name in ("m", "l"):  # keepdim -> reduced
            values[name] = b.emit(f"tensor.collapse_shape {args[k]} {reassoc} : {arg_types[k]} into {red_t(et)}")
        elif name.startswith("p"):
            leaves[name] = _broadcast_input(b, args[k], inputs[k], r)
        else:
            values[name] = args[k]

    region: list[str] = []
    outer = b.lines
    b.lines = region
    loc = lambda step: f' loc("{step_tag(spec.site, spec.group, step)}":1:0)'  # noqa: E731

    def empty(full: bool, e: str) -> str:
        return b.emit(f"tensor.empty({', '.join(dyn_full if full else dyn_red)}) : {full_t(e) if full else red_t(e)}")

    def fill(value: str, e: str = et) -> str:
        c = b.emit(f"arith.constant {value} : {e}", "k")
        return b.emit(f"linalg.fill ins({c} : {e}) outs({empty(False, e)} : {red_t(e)}) -> {red_t(e)}")

    def generic(ins: list[tuple[str, str, str]], outs: list[tuple[str, str, str]], iters: str, body: list[str], yields: list[str], block: list[tuple[str, str]]) -> list[str]:
        maps = ", ".join(m for _, _, m in ins + outs)
        results = [b.fresh("g") for _ in outs]
        head = f"{results[0]}:{len(outs)}" if len(outs) > 1 else results[0]
        region.append(
            f"{head} = linalg.generic {{indexing_maps = [{maps}], iterator_types = [{iters}]}} "
            f"ins({', '.join(v for v, _, _ in ins)} : {', '.join(t for _, t, _ in ins)}) "
            f"outs({', '.join(v for v, _, _ in outs)} : {', '.join(t for _, t, _ in outs)}) {{"
        )
        region.append(f"^bb0({', '.join(f'{n}: {t}' for n, t in block)}):")
        region.extend("  " + line for line in body)
        region.append(f"  linalg.yield {', '.join(yields)} : {', '.join(t for _, t in block[len(ins):])}")
        out_types = ", ".join(t for _, t, _ in outs)
        region.append(f"}} -> ({out_types})" if len(outs) > 1 else f"}} -> {out_types}")
        return [f"{results[0]}#{i}" for i in range(len(outs))] if len(outs) > 1 else results

    def elementwise(ins: list[tuple[str, str, str]], out_e: str, emit_body, full: bool = True) -> str:
        """One parallel linalg.generic; emit_body(b, block values) -> result value."""
        saved, b.lines = b.lines, []
        block = [(f"%e{i}", t) for i, t in enumerate(_element(t) for _, t, _ in ins)] + [("%o", out_e)]
        result = emit_body(b, [n for n, _ in block[: len(ins)]])
        body, b.lines = b.lines, saved
        out = empty(full, out_e)
        out_type = full_t(out_e) if full else red_t(out_e)
        return generic(ins, [(out, out_type, full_map if full else _identity(len(kept)))], par if full else _par(len(kept)), body, [result], block)[0]

    def reduction(src: str, init: str, op: str, tag: str) -> str:
        block = [("%in", et), ("%acc", et)]
        return generic([(src, full_t(et), full_map)], [(init, red_t(et), red_map)], red_iters,
                       [f"%r = {op} %in, %acc : {et}{tag}"], ["%r"], block)[0]

    def x_in_compute_type() -> str:
        if "xc" in values:
            return values["xc"]
        tag = loc(next(s for s in spec.steps if s[0] in "12"))
        src_e, in_e = ELEMENT_TYPES[spec.x_dtype], ELEMENT_TYPES[spec.in_dtype]
        if "x" in values and src_e == et and in_e == et:
            values["xc"] = values["x"]
            return values["xc"]
        if "x" in values:
            ins = [(values["x"], full_t(src_e), full_map)]
            chain = [("convert", spec.x_dtype, "p0")]
            names = {"p0": 0}
        else:
            ins = list(leaves.values())
            chain, names = spec.chain, {n: i for i, n in enumerate(leaves)}

        def body(b: Body, block: list[str]) -> str:
            v, e = _emit_chain(b, chain, {n: (block[i], _element(ins[i][1])) for n, i in names.items()})
            return cast_through(b, v, e, in_e, et, tag)

        values["xc"] = elementwise(ins, et, body)
        return values["xc"]

    def finish_sum(l: str, tag: str) -> str:
        if not (spec.safe or spec.reciprocal):
            return l

        def body(b: Body, block: list[str]) -> str:
            v = block[0]
            if spec.safe:
                tiny = b.emit(f"arith.constant {float_literal(torch.finfo(_TORCH[et]).tiny, et)} : {et}", "k")
                v = b.emit(f"arith.maxnumf {v}, {tiny} : {et}{tag}")
            if spec.reciprocal:
                one = b.emit(f"arith.constant 1.0 : {et}", "k")
                v = b.emit(f"arith.divf {one}, {v} : {et}{tag}")
            return v

        return elementwise([(l, red_t(et), _identity(len(kept)))], et, body, full=False)

    lowest = float_literal(torch.finfo(_TORCH[et]).min, et)
    for step in spec.steps:
        tag = loc(step)
        if step == "13":
            xc = x_in_compute_type()
            m0, l0 = fill(lowest), fill("0.0")
            block = [("%in", et), ("%m", et), ("%l", et)]
            body = [
                f"%mn = {MAX_OP} %m, %in : {et}{loc('13')}",
                f"%a = arith.subf %m, %mn : {et}{tag}", f"%ea = math.exp %a : {et}{tag}",
                f"%b = arith.subf %in, %mn : {et}{tag}", f"%eb = math.exp %b : {et}{tag}",
                f"%la = arith.mulf %l, %ea : {et}{tag}", f"%ln = arith.addf %la, %eb : {et}{tag}",
            ]
            m, l = generic([(xc, full_t(et), full_map)], [(m0, red_t(et), red_map), (l0, red_t(et), red_map)], red_iters,
                           body, ["%mn", "%ln"], block)
            values["m"], values["l"] = m, finish_sum(l, tag)
        elif step.rstrip("'") == "1":
            init = lowest if spec.safe else float_literal(float("-inf"), et)
            values["m"] = reduction(x_in_compute_type(), fill(init), MAX_OP, tag)
        elif step.rstrip("'") == "2":
            def exp_body(b: Body, block: list[str], tag: str = tag) -> str:
                return b.emit(f"math.exp {b.emit(f'arith.subf {block[0]}, {block[1]} : {et}{tag}')} : {et}{tag}")

            values["z"] = elementwise([(x_in_compute_type(), full_t(et), full_map), (values["m"], red_t(et), red_map)], et, exp_body)
        elif step.rstrip("'") == "3":
            values["l"] = finish_sum(reduction(values["z"], fill("0.0"), "arith.addf", tag), tag)
        else:
            out_e = ELEMENT_TYPES[spec.out_dtype]
            op = "arith.mulf" if spec.reciprocal else "arith.divf"

            def scale_body(b: Body, block: list[str], tag: str = tag, op: str = op, out_e: str = out_e) -> str:
                return _convert(b, b.emit(f"{op} {block[0]}, {block[1]} : {et}{tag}"), et, out_e, tag)

            values["y"] = elementwise([(values["z"], full_t(et), full_map), (values["l"], red_t(et), red_map)], out_e, scale_body)

    out_types = [(full_t if spec.output_keeps_full_size(o) else red_t)(ELEMENT_TYPES[spec.output_dtype(o)]) for o in spec.outputs]
    region.append(f"flow.return {', '.join(values[o] for o in spec.outputs)} : {', '.join(out_types)}")
    b.lines = outer
    res = b.fresh("r")
    decl = ", ".join(
        t + (f"{{{', '.join(dyn_full if spec.output_keeps_full_size(o) else dyn_red)}}}" if (dyn_full if spec.output_keeps_full_size(o) else dyn_red) else "")
        for o, t in zip(spec.outputs, out_types)
    )
    head = f"{res}:{len(out_types)}" if len(out_types) > 1 else res
    outer.append(f"{head} = flow.dispatch.region -> ({decl}) {{")
    outer.extend("  " + line for line in region)
    outer.append(f'}} loc("{step_tag(spec.site, spec.group, "".join(spec.steps))}":1:0)')
    results = [f"{res}#{i}" for i in range(len(out_types))] if len(out_types) > 1 else [res]
    ret_types = []
    for o, v, t in zip(spec.outputs, list(results), out_types):
        if spec.output_keeps_full_size(o):
            ret_types.append(t)
            continue
        kshape = ", ".join("1" if i == d else sizes[i] for i in range(r))
        keep_t = "tensor<" + "".join(("1" if i == d else "?" if sizes[i].startswith("%") else sizes[i]) + "x" for i in range(r)) + f"{_element(t)}>"
        results[results.index(v)] = b.emit(f"tensor.expand_shape {v} {reassoc} output_shape [{kshape}] : {t} into {keep_t}")
        ret_types.append(keep_t)

    fn = function_name(spec, arg_types)
    text = "\n".join(
        [
            "module {",
            f"util.func private @{fn}({', '.join(f'{a}: {t}' for a, t in zip(args, arg_types))}) -> ({', '.join(ret_types)}) {{",
            *("  " + line for line in b.lines),
            f"  util.return {', '.join(results)} : {', '.join(ret_types)}",
            "}",
            "}",
        ]
    )
    return fn, text


def function_name(spec: GroupSpec, arg_types: Sequence[str]) -> str:
    """A name unique to the group and its argument types, readable in IREE's dumps."""
    key = hashlib.sha1(f"{spec.to_json()}|{list(arg_types)}".encode()).hexdigest()[:16]
    return f"fxsoftmax_{_ident(spec.site)}_g{spec.group}_{key}"


def _emit_chain(b: Body, chain, leaves: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """Producer instructions as scalar arith/math ops; returns (value, element type) of the last."""
    temps: list[tuple[str, str]] = []

    def operand(o, e: str) -> str:
        if isinstance(o, str):
            v, src = leaves[o] if o[0] == "p" else temps[int(o[1:])]
            return v if src == "i1" else _convert(b, v, src, e, "")
        return b.emit(f"arith.constant {float_literal(float(o), e)} : {e}", "k")

    for op, dtype, *operands in chain:
        e = ELEMENT_TYPES[dtype]
        if op == "where":
            cond = operands[0]
            c = leaves[cond][0] if isinstance(cond, str) and cond[0] == "p" else temps[int(cond[1:])][0]
            v = b.emit(f"arith.select {c}, {operand(operands[1], e)}, {operand(operands[2], e)} : {e}")
        elif op == "convert":
            v = operand(operands[0], e)
        elif op == "neg":
            v = b.emit(f"arith.negf {operand(operands[0], e)} : {e}")
        elif op == "tanh":
            v = b.emit(f"math.tanh {operand(operands[0], e)} : {e}")
        else:
            a, c = (operand(o, e) for o in operands)
            v = b.emit(f"arith.{op}f {a}, {c} : {e}")
        temps.append((v, e))
    return temps[-1]


def _broadcast_input(b: Body, value: str, info: tuple[Sequence[int], str], rank: int) -> tuple[str, str, str]:
    """A leaf read by the producer generic, its static unit dims collapsed away (they broadcast)."""
    shape, elt = info
    offset = rank - len(shape)
    kept = [j for j, s in enumerate(shape) if s != 1]
    idx = ", ".join(f"d{i}" for i in range(rank))
    amap = f"affine_map<({idx}) -> ({', '.join(f'd{j + offset}' for j in kept)})>"
    if len(kept) == len(shape):
        return value, tensor_type(shape, elt), amap
    groups: list[list[int]] = [[j] for j in kept]
    for j, s in enumerate(shape):  # each unit dim joins the next kept dim (or the last one)
        if s == 1 and groups:
            nxt = next((g for g in groups if g[0] > j), groups[-1])
            nxt.append(j)
    reassoc = "[" + ", ".join("[" + ", ".join(map(str, sorted(g))) + "]" for g in groups) + "]"
    small = tensor_type([shape[j] for j in kept], elt)
    v = b.emit(f"tensor.collapse_shape {value} {reassoc} : {tensor_type(shape, elt)} into {small}")
    return v, small, amap


def tensor_type(shape: Sequence[int], elt: str) -> str:
    return "tensor<" + "".join(("?" if s < 0 else str(s)) + "x" for s in shape) + f"{elt}>"


def _element(tensor_type: str) -> str:
    return tensor_type[:-1].rsplit("x", 1)[-1].replace("tensor<", "")


def _identity(n: int) -> str:
    idx = ", ".join(f"d{i}" for i in range(n))
    return f"affine_map<({idx}) -> ({idx})>"


def _par(n: int) -> str:
    return ", ".join(['"parallel"'] * n)


def _keepdim_reassociation(rank: int, dim: int) -> str:
    """Reassociation between the reduced tensor and the keepdim one (the unit dim joins a neighbour)."""
    groups = [[i] for i in range(rank) if i != dim]
    if groups:
        groups[max(0, dim - 1) if dim > 0 else 0].append(dim)
        groups = [sorted(g) for g in groups]
    return "[" + ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups) + "]"


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)
