"""Elementwise producers of a softmax input that can move into the softmax's first plan group.

The attention scale, the mask add or fill and soft-capping (`tanh(x / c) * c`) produce x element by
element. When nothing else reads their results, the first group can compute them itself from their
inputs (the leaves), so x is never written to global memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from ..core.dtypes import dtype_name
from ..core.group import MAX_INPUTS, Instr
from .sites import fake_value

aten = torch.ops.aten
prims = torch.ops.prims

_BINARY = {
    aten.add.Tensor: "add", aten.sub.Tensor: "sub", aten.mul.Tensor: "mul", aten.div.Tensor: "div",
    aten.add.Scalar: "add", aten.sub.Scalar: "sub", aten.mul.Scalar: "mul", aten.div.Scalar: "div",
}
_UNARY = {aten.neg.default: "neg", aten.tanh.default: "tanh", prims.convert_element_type.default: "convert",
          aten._to_copy.default: "convert"}
_WHERE = (aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Producers:
    leaves: list[fx.Node]  # graph values the chain reads
    chain: list[Instr]  # the instructions, in order; the last computes x
    nodes: list[fx.Node]  # the graph nodes the chain replaces (x's producer nodes)


def pullable_producers(x: fx.Node, softmax: fx.Node) -> Producers | None:
    """The elementwise producer tree of `x` that only the softmax reads, or None if there is none."""
    xval = fake_value(x)
    if xval is None or not _only_user(x, softmax) or _kind(x) is None:
        return None
    leaves: list[fx.Node] = []
    chain: list[Instr] = []
    nodes: list[fx.Node] = []

    def operand(a: Any, user: fx.Node, cond: bool = False) -> Any:
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return float(a)
        if not isinstance(a, fx.Node):
            raise _NotPullable
        val = fake_value(a)
        if val is None or not _broadcasts_to(val.shape, xval.shape) or val.dtype not in ((torch.bool,) if cond else _FLOATS):
            raise _NotPullable
        if val.dim() == 0 and a.op == "call_function" and a.target is aten.zeros.default:
            return 0.0  # a 0-d zero from mask code: a constant
        if not cond and _kind(a) is not None and _only_user(a, user):
            mark = len(chain), len(nodes), len(leaves)
            try:
                return visit(a)
            except _NotPullable:  # keep it as a leaf
                del chain[mark[0]:], nodes[mark[1]:], leaves[mark[2]:]
        if a.op == "call_function" and a.target is aten.expand.default and _only_user(a, user):
            inner = fake_value(a.args[0])
            if inner is not None and _broadcasts_to(inner.shape, xval.shape):
                nodes.append(a)
                return operand(a.args[0], a, cond)
        if a not in leaves:
            leaves.append(a)
        return f"p{leaves.index(a)}"

    def visit(node: fx.Node) -> str:
        kind = _kind(node)
        val = fake_value(node)
        if kind is None or val is None or val.dtype not in _FLOATS:
            raise _NotPullable
        if kind == "where":
            ops = [operand(a, node, cond=i == 0) for i, a in enumerate(node.args[:3])]
            if not isinstance(ops[0], str):
                raise _NotPullable
        elif kind in ("neg", "tanh", "convert"):
            ops = [operand(node.args[0], node)]
        else:
            if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
                raise _NotPullable
            ops = [operand(a, node) for a in node.args[:2]]
        nodes.append(node)
        chain.append((kind, dtype_name(val.dtype), *ops))
        return f"t{len(chain) - 1}"

    try:
        visit(x)
    except _NotPullable:
        return None
    if not leaves or len(leaves) > MAX_INPUTS or not any(_same_shape(fake_value(l).shape, xval.shape) for l in leaves):
        return None
    return Producers(leaves, chain, nodes)


class _NotPullable(Exception):
    pass


def _kind(node: fx.Node) -> str | None:
    if node.op != "call_function":
        return None
    if node.target in _BINARY:
        return _BINARY[node.target]
    if node.target in _UNARY:
        if node.target is aten._to_copy.default and set(node.kwargs) - {"dtype"}:
            return None
        return _UNARY[node.target]
    return "where" if node.target in _WHERE else None


def _only_user(node: fx.Node, user: fx.Node) -> bool:
    return list(node.users) == [user]


def _same(a: Any, b: Any) -> bool:
    return a == b if isinstance(a, int) and isinstance(b, int) else str(a) == str(b)


def _broadcasts_to(shape, target) -> bool:
    """Right-aligned, each size either x's or a static 1."""
    if len(shape) > len(target):
        return False
    off = len(target) - len(shape)
    return all((isinstance(s, int) and s == 1) or _same(s, target[i + off]) for i, s in enumerate(shape))


def _same_shape(shape, target) -> bool:
    return len(shape) == len(target) and all(_same(a, b) for a, b in zip(shape, target))

