"""Rewriting one softmax site into its four steps, grouped per a Plan, with boundaries between groups."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx

from ..ops import BOUNDARY, ONLINE_MAX_SUM
from ..policy import STEP_NAMES, Plan
from .sites import SoftmaxSite, fake_value

aten = torch.ops.aten
prims = torch.ops.prims

# Every node the pass emits carries a synthetic innermost stack frame "fxsoftmax:<site>:g<group>:s<step>".
# iree-turbine turns stack frames into MLIR locations and IREE keeps them through dispatch formation,
# which is how the report finds each step in IREE's own output.
TAG_PREFIX = "fxsoftmax:"
VALUE_NAMES = {1: "m", 2: "z", 3: "l"}


def step_tag(site: str, group: int, step: str) -> str:
    return f"{TAG_PREFIX}{site}:g{group}:s{step}"


def _tag_trace(node: fx.Node, tag: str, original: fx.Node) -> None:
    trace = original.meta.get("stack_trace") or ""
    if trace and not trace.endswith("\n"):
        trace += "\n"
    node.meta["stack_trace"] = f'{trace}  File "{tag}", line 1, in fxsoftmax\n'


def keep_fused_site(gm: fx.GraphModule, site: SoftmaxSite) -> None:
    """Leave a site to IREE; tag it so the report can find its dispatch."""
    node = site.node
    if TAG_PREFIX not in (node.meta.get("stack_trace") or ""):
        _tag_trace(node, step_tag(site.name, 1, "fused"), node)
    if site.safe:
        # IREE 3.9 with aggressive fusion fails to compile a _safe_softmax with elementwise producers
        # fused in ("'vector.store' op write affecting operations on global resources are restricted
        # to workgroup distributed contexts"); a boundary on its input keeps the producers apart.
        fenced = _Emitter(gm, site)(BOUNDARY, (site.x,), step_tag(site.name, 1, "fused"), "in_x")
        node.replace_input_with(site.x, fenced)


class _Emitter:
    """Creates call_function nodes before the softmax node, keeping meta['val'] valid."""

    def __init__(self, gm: fx.GraphModule, site: SoftmaxSite):
        self.graph = gm.graph
        self.site = site
        self.fake_mode = getattr(fake_value(site.x), "fake_mode", None)

    def __call__(self, target: Callable, args: tuple, tag: str, label: str, **kwargs: Any) -> fx.Node:
        anchor = self.site.node
        with self.graph.inserting_before(anchor):
            node = self.graph.create_node("call_function", target, args, kwargs, name=f"{self.site.name}_{label}")
        for key in ("nn_module_stack", "source_fn_stack", "torch_fn"):
            if key in anchor.meta:
                node.meta[key] = anchor.meta[key]
        _tag_trace(node, tag, anchor)
        if self.fake_mode is not None:
            fake_args = [a.meta.get("val", a.meta.get("example_value")) if isinstance(a, fx.Node) else a for a in args]
            with self.fake_mode:
                node.meta["val"] = target(*fake_args, **kwargs)
            if "example_value" in anchor.meta:
                node.meta["example_value"] = node.meta["val"]
        return node


def rewrite_site(gm: fx.GraphModule, site: SoftmaxSite, plan: Plan) -> fx.Node:
    """Replace `site` by the plan's steps; return the node that now holds the softmax result."""
    emit = _Emitter(gm, site)
    dim, cdt = [site.dim], site.compute_dtype
    stored: dict[int, fx.Node] = {}  # step -> node computed unmarked (what later groups may read)

    # IREE 3.9 miscompiles (the module dies with SIGBUS at run time) a dispatch with dynamic shapes that
    # fuses x's elementwise producers into the first group and also writes x out for a later group. Then
    # the first group reads x through a boundary too: the producers keep a dispatch of their own.
    x_reread = any(s.n in (1, 2) for g in plan.groups[1:] for s in g)
    fence_first = x_reread and any(not isinstance(d, int) for d in (site.shape or ()))
    # IREE 3.9's CPU codegen also gets the online reduction wrong (every row off) when it fuses f16/bf16
    # producers into it: the online group then reads x through a boundary as well.
    fence_first |= plan.groups[0][0].online and cdt != site.x_dtype

    # When steps 3 and 4 are in different groups, l crosses to step 4's group as 1/l, made once per row:
    # step 4 then multiplies instead of dividing every element. (Within one group IREE would fuse 1/l into
    # the per-element multiply; with a single row it would make the lone scalar 1/l a dispatch of its own:
    # step 4 divides there.)
    group_of = {s.n: gi for gi, g in enumerate(plan.groups) for s in g if s.n in (3, 4)}  # each appears once
    several_rows = not all(d == 1 for i, d in enumerate(site.shape or ()) if i != site.dim)
    reciprocal = several_rows and group_of[3] != group_of[4]

    for gi, group in enumerate(plan.groups, start=1):
        local: dict[Any, fx.Node] = {}

        def enter(key: Any, value: fx.Node, tag: str) -> fx.Node:
            # Everything a group reads from outside passes through a boundary of its own, except the
            # softmax input of the first group, so x's producers can fuse into that group.
            if key not in local:
                label = f"g{gi}_in_{VALUE_NAMES.get(key, key)}"
                direct = gi == 1 and key == "x" and not fence_first
                local[key] = value if direct else emit(BOUNDARY, (value,), tag, label)
            return local[key]

        def xc(tag: str) -> fx.Node:
            if "xc" not in local:
                v = enter("x", site.x, tag)
                if site.in_dtype != site.x_dtype:
                    v = emit(prims.convert_element_type.default, (v, site.in_dtype), tag, f"g{gi}_cast_in")
                if cdt != site.in_dtype:
                    v = emit(prims.convert_element_type.default, (v, cdt), tag, f"g{gi}_upcast")
                local["xc"] = v
            return local["xc"]

        def get(step: int, tag: str) -> fx.Node:
            return local[step] if step in local else enter(step, stored[step], tag)

        def finish_sum(l: fx.Node, tag: str, label: str) -> fx.Node:
            if site.safe:  # a fully masked row sums to 0: 0 / tiny = 0, as _safe_softmax gives
                l = emit(aten.clamp.default, (l, torch.finfo(cdt).tiny), tag, label + "_safe")
            if reciprocal:
                l = emit(aten.reciprocal.default, (l,), tag, label + "_recip")
            return l

        for s in group:
            tag = step_tag(site.name, gi, "13" if s.online else str(s))
            label = f"g{gi}_{'online' if s.online else STEP_NAMES[s.n]}"
            if s.online and s.n == 3:
                out = local[3]  # made with step 1
            elif s.online:
                pair = emit(ONLINE_MAX_SUM, (xc(tag), site.dim, tag), tag, label)
                out = emit(operator.getitem, (pair, 0), tag, label + "_max")
                local[3] = finish_sum(emit(operator.getitem, (pair, 1), tag, label + "_sum"), tag, label)
            elif s.n == 1:
                out = emit(aten.amax.default, (xc(tag), dim, True), tag, label)
                if site.safe:  # a fully masked row has max -inf; keep x - m at -inf, not NaN
                    out = emit(aten.clamp.default, (out, torch.finfo(cdt).min), tag, label + "_safe")
            elif s.n == 2:
                d = emit(aten.sub.Tensor, (xc(tag), get(1, tag)), tag, label + "_sub")
                out = emit(aten.exp.default, (d,), tag, label)
            elif s.n == 3:
                out = finish_sum(emit(aten.sum.dim_IntList, (get(2, tag), dim, True), tag, label), tag, label)
            else:
                z, l = get(2, tag), get(3, tag)
                op = aten.mul.Tensor if reciprocal else aten.div.Tensor
                out = emit(op, (z, l), tag, label)
                if site.out_dtype != cdt:
                    out = emit(prims.convert_element_type.default, (out, site.out_dtype), tag, label + "_cast")
            local[s.n] = out
            if not s.recompute:
                stored[s.n] = out

    # The last group's result passes a boundary too, so consumers cannot pull step 4 into their dispatch.
    out = emit(BOUNDARY, (stored[4],), step_tag(site.name, len(plan.groups), "4"), "out")
    site.node.replace_all_uses_with(out)
    gm.graph.erase_node(site.node)
    return out
