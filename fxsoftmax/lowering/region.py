"""A plan group as MLIR: one `flow.dispatch.region` holding the group's steps as `linalg.generic`s.

IREE keeps a pre-formed dispatch region as one dispatch, and its softmax raising only matches chains
outside regions, so each group becomes exactly one dispatch with IREE's default flags. Every float op
of a step carries the step's tag as its location (fxsoftmax.core.tags); ops of pulled-in producers carry
none, so the report lists them as fused producers. One method per step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core import steps
from ..core.dtypes import dtype
from ..core.group import GroupSpec
from ..core.tags import step_tag
from ..quirks import MAX_OP
from .mlir import (
    Block,
    cast_through,
    convert,
    element_of,
    element_type,
    float_literal,
    function_name,
    identity_map,
    keepdim_reassociation,
    parallel,
    tensor_type,
)

Operand = tuple[str, str, str]  # (value, tensor type, indexing map)


def group_function(spec: GroupSpec, inputs: Sequence[tuple[Sequence[int], str]]) -> tuple[str, str]:
    """(function name, MLIR module text) of a `util.func` taking the group's inputs (sizes with -1 for
    dynamic, element type) and returning its outputs, computed in one `flow.dispatch.region`."""
    region = Region(spec, inputs)
    for token in spec.steps:
        region.STEP[steps.key(token)](region, region.loc(token))
    return region.function()


class Region:
    """One group's function: what stands before the region (sizes, reshaped inputs), the region's lines,
    and the values made so far ("x", "m", "z", "l", "y", and "xc": x in the compute type)."""

    def __init__(self, spec: GroupSpec, inputs: Sequence[tuple[Sequence[int], str]]):
        self.spec, self.inputs = spec, inputs
        self.et = element_type(spec.compute_dtype)
        r, d = spec.rank, spec.dim
        self.kept = [i for i in range(r) if i != d]
        idx = ", ".join(f"d{i}" for i in range(r))
        self.full_map = identity_map(r)
        self.red_map = f"affine_map<({idx}) -> ({', '.join(f'd{i}' for i in self.kept)})>"
        self.red_iters = ", ".join('"reduction"' if i == d else '"parallel"' for i in range(r))
        self.arg_types = [tensor_type(shape, et) for shape, et in inputs]
        self.args = [f"%a{i}" for i in range(len(inputs))]
        self.outer = Block()
        self.body = self.outer.nested()
        self.sizes = self._sizes()
        self.values: dict[str, str] = {}
        self.leaves: dict[str, Operand] = {}  # producer leaf -> operand, read outside the region
        self._bind_inputs()

    def loc(self, token: str) -> str:
        return f' loc("{step_tag(self.spec.site, self.spec.group, token)}":1:0)'

    # --- shapes and types ---

    def _sizes(self) -> list[str]:
        """x's sizes: static from the spec, dynamic ones read from an input that has them."""
        spec, sizes = self.spec, []
        for i in range(spec.rank):
            if spec.shape[i] >= 0:
                sizes.append(str(spec.shape[i]))
                continue
            for k, ((shape, _), name) in enumerate(zip(self.inputs, spec.inputs)):
                j = i - (spec.rank - len(shape))
                if j >= 0 and shape[j] < 0 and not (name in ("m", "l") and i == spec.dim):
                    c = self.outer.emit(f"arith.constant {j} : index", "c")
                    sizes.append(self.outer.emit(f"tensor.dim {self.args[k]}, {c} : {self.arg_types[k]}", "n"))
                    break
            else:
                raise ValueError(f"fxsoftmax group {spec.site}:g{spec.group}: no input gives the size of dim {i}")
        return sizes

    def dynamic(self, full: bool) -> list[str]:
        return [s for i, s in enumerate(self.sizes) if s.startswith("%") and (full or i != self.spec.dim)]

    def type(self, full: bool, et: str) -> str:
        dims = self.sizes if full else [self.sizes[i] for i in self.kept]
        return "tensor<" + "".join(("?" if s.startswith("%") else s) + "x" for s in dims) + f"{et}>"

    def _bind_inputs(self) -> None:
        reassoc = keepdim_reassociation(self.spec.rank, self.spec.dim)
        for k, name in enumerate(self.spec.inputs):
            if name in ("m", "l"):  # keepdim -> reduced
                self.values[name] = self.outer.emit(
                    f"tensor.collapse_shape {self.args[k]} {reassoc} : {self.arg_types[k]} into {self.type(False, self.et)}")
            elif name.startswith("p"):
                self.leaves[name] = broadcast_input(self.outer, self.args[k], self.inputs[k], self.spec.rank)
            else:
                self.values[name] = self.args[k]

    # --- linalg building blocks, emitted into the region ---

    def empty(self, full: bool, et: str) -> str:
        return self.body.emit(f"tensor.empty({', '.join(self.dynamic(full))}) : {self.type(full, et)}")

    def fill(self, value: str) -> str:
        et, red = self.et, self.type(False, self.et)
        c = self.body.emit(f"arith.constant {value} : {et}", "k")
        return self.body.emit(f"linalg.fill ins({c} : {et}) outs({self.empty(False, et)} : {red}) -> {red}")

    def generic(self, ins: list[Operand], outs: list[Operand], iters: str, body: list[str], yields: list[str],
                block: list[tuple[str, str]]) -> list[str]:
        lines, maps = self.body.lines, ", ".join(m for _, _, m in ins + outs)
        results = [self.body.fresh("g") for _ in outs]
        head = f"{results[0]}:{len(outs)}" if len(outs) > 1 else results[0]
        lines.append(f"{head} = linalg.generic {{indexing_maps = [{maps}], iterator_types = [{iters}]}} "
                     f"ins({', '.join(v for v, _, _ in ins)} : {', '.join(t for _, t, _ in ins)}) "
                     f"outs({', '.join(v for v, _, _ in outs)} : {', '.join(t for _, t, _ in outs)}) {{")
        lines.append(f"^bb0({', '.join(f'{n}: {t}' for n, t in block)}):")
        lines.extend("  " + line for line in body)
        lines.append(f"  linalg.yield {', '.join(yields)} : {', '.join(t for _, t in block[len(ins):])}")
        out_types = ", ".join(t for _, t, _ in outs)
        lines.append(f"}} -> ({out_types})" if len(outs) > 1 else f"}} -> {out_types}")
        return [f"{results[0]}#{i}" for i in range(len(outs))] if len(outs) > 1 else results

    def elementwise(self, ins: list[Operand], out_et: str, emit: Callable[[Block, list[str]], str], full: bool = True) -> str:
        """One parallel linalg.generic; `emit(block, element values)` writes its body and returns the result."""
        inner = self.body.nested()
        block = [(f"%e{i}", element_of(t)) for i, (_, t, _) in enumerate(ins)] + [("%o", out_et)]
        result = emit(inner, [n for n, _ in block[:len(ins)]])
        rank = self.spec.rank if full else len(self.kept)
        out = (self.empty(full, out_et), self.type(full, out_et), identity_map(rank))
        return self.generic(ins, [out], parallel(rank), inner.lines, [result], block)[0]

    def reduction(self, src: str, init: str, op: str, tag: str) -> str:
        et = self.et
        return self.generic([(src, self.type(True, et), self.full_map)], [(init, self.type(False, et), self.red_map)],
                            self.red_iters, [f"%r = {op} %in, %acc : {et}{tag}"], ["%r"], [("%in", et), ("%acc", et)])[0]

    def reduced(self, value: str) -> Operand:
        return value, self.type(False, self.et), self.red_map

    def full(self, value: str) -> Operand:
        return value, self.type(True, self.et), self.full_map

    # --- the steps ---

    def x_in_compute_type(self) -> str:
        """x as softmax computes on it: the pulled-in producers evaluated, cast through softmax's dtype."""
        if "xc" in self.values:
            return self.values["xc"]
        spec, et = self.spec, self.et
        tag = self.loc(next(t for t in spec.steps if "x" in steps.reads(t)))
        src_et, in_et = element_type(spec.x_dtype), element_type(spec.in_dtype)
        if "x" in self.values and src_et == et and in_et == et:
            self.values["xc"] = self.values["x"]
            return self.values["xc"]
        if "x" in self.values:
            ins, chain, names = [(self.values["x"], self.type(True, src_et), self.full_map)], [("convert", spec.x_dtype, "p0")], {"p0": 0}
        else:
            ins, chain, names = list(self.leaves.values()), spec.chain, {n: i for i, n in enumerate(self.leaves)}

        def body(b: Block, block: list[str]) -> str:
            v, e = emit_chain(b, chain, {n: (block[i], element_of(ins[i][1])) for n, i in names.items()})
            return cast_through(b, v, e, in_et, et, tag)

        self.values["xc"] = self.elementwise(ins, et, body)
        return self.values["xc"]

    def finish_sum(self, l: str, tag: str) -> str:
        """l as it leaves the group: clamped (safe softmax) and inverted (`reciprocal`) where the spec says."""
        spec, et = self.spec, self.et
        if not (spec.safe or spec.reciprocal):
            return l

        def body(b: Block, block: list[str]) -> str:
            v = block[0]
            if spec.safe:
                tiny = b.emit(f"arith.constant {float_literal(torch.finfo(dtype(et).torch).tiny, et)} : {et}", "k")
                v = b.emit(f"arith.maxnumf {v}, {tiny} : {et}{tag}")
            if spec.reciprocal:
                one = b.emit(f"arith.constant 1.0 : {et}", "k")
                v = b.emit(f"arith.divf {one}, {v} : {et}{tag}")
            return v

        return self.elementwise([(l, self.type(False, et), identity_map(len(self.kept)))], et, body, full=False)

    def lowest(self) -> str:
        return float_literal(torch.finfo(dtype(self.et).torch).min, self.et)

    def step_max(self, tag: str) -> None:
        init = self.lowest() if self.spec.safe else float_literal(float("-inf"), self.et)
        self.values["m"] = self.reduction(self.x_in_compute_type(), self.fill(init), MAX_OP, tag)

    def step_exp(self, tag: str) -> None:
        et = self.et

        def body(b: Block, block: list[str]) -> str:
            return b.emit(f"math.exp {b.emit(f'arith.subf {block[0]}, {block[1]} : {et}{tag}')} : {et}{tag}")

        self.values["z"] = self.elementwise([self.full(self.x_in_compute_type()), self.reduced(self.values["m"])], et, body)

    def step_sum(self, tag: str) -> None:
        self.values["l"] = self.finish_sum(self.reduction(self.values["z"], self.fill("0.0"), "arith.addf", tag), tag)

    def step_scale(self, tag: str) -> None:
        et, out_et = self.et, element_type(self.spec.out_dtype)
        op = "arith.mulf" if self.spec.reciprocal else "arith.divf"

        def body(b: Block, block: list[str]) -> str:
            return convert(b, b.emit(f"{op} {block[0]}, {block[1]} : {et}{tag}"), et, out_et, tag)

        self.values["y"] = self.elementwise([self.full(self.values["z"]), self.reduced(self.values["l"])], out_et, body)

    def step_online(self, tag: str) -> None:
        """Steps 1 and 3 in one pass: running max, and the running sum rescaled whenever the max grows."""
        et, xc = self.et, self.x_in_compute_type()
        m0, l0 = self.fill(self.lowest()), self.fill("0.0")
        body = [
            f"%mn = {MAX_OP} %m, %in : {et}{tag}",
            f"%a = arith.subf %m, %mn : {et}{tag}", f"%ea = math.exp %a : {et}{tag}",
            f"%b = arith.subf %in, %mn : {et}{tag}", f"%eb = math.exp %b : {et}{tag}",
            f"%la = arith.mulf %l, %ea : {et}{tag}", f"%ln = arith.addf %la, %eb : {et}{tag}",
        ]
        m, l = self.generic([self.full(xc)], [self.reduced(m0), self.reduced(l0)], self.red_iters, body, ["%mn", "%ln"],
                            [("%in", et), ("%m", et), ("%l", et)])
        self.values["m"], self.values["l"] = m, self.finish_sum(l, tag)

    STEP: dict[str, Callable[["Region", str], None]] = {
        "1": step_max, "2": step_exp, "3": step_sum, "4": step_scale, steps.ONLINE: step_online,
    }

    # --- the function ---

    def function(self) -> tuple[str, str]:
        """(name, module text): the outer lines, the region returning the group's outputs, their keepdim shapes."""
        spec, outer = self.spec, self.outer
        out_types = [self.type(spec.output_keeps_full_size(o), element_type(spec.output_dtype(o))) for o in spec.outputs]
        self.body.lines.append(f"flow.return {', '.join(self.values[o] for o in spec.outputs)} : {', '.join(out_types)}")
        res = outer.fresh("r")
        decl = ", ".join(t + (f"{{{', '.join(dyn)}}}" if dyn else "")
                         for o, t in zip(spec.outputs, out_types) for dyn in [self.dynamic(spec.output_keeps_full_size(o))])
        outer.lines.append(f"{res}:{len(out_types)} = flow.dispatch.region -> ({decl}) {{" if len(out_types) > 1
                           else f"{res} = flow.dispatch.region -> ({decl}) {{")
        outer.lines.extend("  " + line for line in self.body.lines)
        outer.lines.append(f'}} loc("{step_tag(spec.site, spec.group, "".join(spec.steps))}":1:0)')
        results = [f"{res}#{i}" for i in range(len(out_types))] if len(out_types) > 1 else [res]
        returned = [self._keepdim(o, v, t) for o, v, t in zip(spec.outputs, results, out_types)]
        fn = function_name(spec, self.arg_types)
        text = "\n".join([
            "module {",
            f"util.func private @{fn}({', '.join(f'{a}: {t}' for a, t in zip(self.args, self.arg_types))}) -> ({', '.join(t for _, t in returned)}) {{",
            *("  " + line for line in outer.lines),
            f"  util.return {', '.join(v for v, _ in returned)} : {', '.join(t for _, t in returned)}",
            "}",
            "}",
        ])
        return fn, text

    def _keepdim(self, name: str, value: str, t: str) -> tuple[str, str]:
        """A reduced output back in its keepdim shape (the softmax dim of size 1)."""
        if self.spec.output_keeps_full_size(name):
            return value, t
        d, sizes = self.spec.dim, self.sizes
        shape = ", ".join("1" if i == d else sizes[i] for i in range(self.spec.rank))
        dims = ("1" if i == d else "?" if sizes[i].startswith("%") else sizes[i] for i in range(self.spec.rank))
        keep_t = "tensor<" + "".join(f"{s}x" for s in dims) + f"{element_of(t)}>"
        reassoc = keepdim_reassociation(self.spec.rank, d)
        return self.outer.emit(f"tensor.expand_shape {value} {reassoc} output_shape [{shape}] : {t} into {keep_t}"), keep_t


def emit_chain(b: Block, chain, leaves: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """Producer instructions (fxsoftmax.core.group) as scalar arith/math ops; (value, element type) of the last."""
    temps: list[tuple[str, str]] = []

    def operand(o, e: str) -> str:
        if isinstance(o, str):
            v, src = leaves[o] if o[0] == "p" else temps[int(o[1:])]
            return v if src == "i1" else convert(b, v, src, e, "")
        return b.emit(f"arith.constant {float_literal(float(o), e)} : {e}", "k")

    for op, dtype_name, *operands in chain:
        e = element_type(dtype_name)
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


def broadcast_input(b: Block, value: str, info: tuple[Sequence[int], str], rank: int) -> Operand:
    """A leaf read by the producer generic, its static unit dims collapsed away (they broadcast)."""
    shape, et = info
    offset = rank - len(shape)
    kept = [j for j, s in enumerate(shape) if s != 1]
    idx = ", ".join(f"d{i}" for i in range(rank))
    amap = f"affine_map<({idx}) -> ({', '.join(f'd{j + offset}' for j in kept)})>"
    if len(kept) == len(shape):
        return value, tensor_type(shape, et), amap
    groups: list[list[int]] = [[j] for j in kept]
    for j, s in enumerate(shape):  # each unit dim joins the next kept dim (or the last one)
        if s == 1 and groups:
            nxt = next((g for g in groups if g[0] > j), groups[-1])
            nxt.append(j)
    reassoc = "[" + ", ".join("[" + ", ".join(map(str, sorted(g))) + "]" for g in groups) + "]"
    small = tensor_type([shape[j] for j in kept], et)
    v = b.emit(f"tensor.collapse_shape {value} {reassoc} : {tensor_type(shape, et)} into {small}")
    return v, small, amap
