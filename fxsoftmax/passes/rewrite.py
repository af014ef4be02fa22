"""Rewriting one softmax site: one `fxsoftmax.group` op per plan group (each becomes one IREE dispatch)."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch.fx as fx

from .. import quirks
from ..core import steps
from ..core.dtypes import dtype_name
from ..core.group import MAX_INPUTS, GroupSpec
from ..core.op import GROUP_OPS
from ..core.policy import IN_OUTPUT, IN_OUTPUT_ACCEPTS, Plan, in_output_applies
from ..core.tags import PREFIX, step_tag
from .producers import pullable_producers
from .sites import SoftmaxSite, fake_value


class UnsupportedPlanError(ValueError):
    """A plan IREE cannot run for this site."""


def _tag_trace(node: fx.Node, tag: str, original: fx.Node) -> None:
    trace = original.meta.get("stack_trace") or ""
    if trace and not trace.endswith("\n"):
        trace += "\n"
    node.meta["stack_trace"] = f'{trace}  File "{tag}", line 1, in fxsoftmax\n'


def keep_fused_site(gm: fx.GraphModule, site: SoftmaxSite) -> None:
    """Leave a site to IREE; tag it so the report can find its dispatch."""
    node = site.node
    if PREFIX not in (node.meta.get("stack_trace") or ""):
        _tag_trace(node, step_tag(site.name, 1, "fused"), node)


class _Emitter:
    """Creates call_function nodes before the softmax node, keeping meta['val'] valid."""

    def __init__(self, gm: fx.GraphModule, site: SoftmaxSite):
        self.graph = gm.graph
        self.site = site
        self.fake_mode = getattr(fake_value(site.x), "fake_mode", None)

    def __call__(self, target: Callable, args: tuple, label: str) -> fx.Node:
        anchor = self.site.node
        with self.graph.inserting_before(anchor):
            node = self.graph.create_node("call_function", target, args, {}, name=f"{self.site.name}_{label}")
        for key in ("nn_module_stack", "source_fn_stack", "torch_fn"):
            if key in anchor.meta:
                node.meta[key] = anchor.meta[key]
        if "stack_trace" in anchor.meta:
            node.meta["stack_trace"] = anchor.meta["stack_trace"]
        if self.fake_mode is not None:
            fake_args = [a.meta.get("val", a.meta.get("example_value")) if isinstance(a, fx.Node) else a for a in args]
            with self.fake_mode:
                node.meta["val"] = target(*fake_args)
            if "example_value" in anchor.meta:
                node.meta["example_value"] = node.meta["val"]
        return node


def rewrite_site(gm: fx.GraphModule, site: SoftmaxSite, plan: Plan) -> fx.Node:
    """Replace `site` by one group op per plan group; return the node that now holds the softmax result."""
    if plan.in_output:
        _check_in_output(site)
    emit = _Emitter(gm, site)
    groups = plan.groups
    needs = [steps.outside_reads(g) for g in groups]
    later_reads_x = any("x" in n for n in needs[1:])
    pull = quirks.may_pull_producers(later_reads_x) and not plan.in_output  # the hand-written kernel reads x only
    producers = pullable_producers(site.x, site.node) if pull else None
    where = {v: gi for gi, g in enumerate(groups) for t in g if not steps.is_recomputed(t) for v in steps.writes(t)}
    common = dict(
        site=site.name, dim=site.dim, shape=tuple(d if isinstance(d, int) else -1 for d in site.shape),
        x_dtype=dtype_name(site.x_dtype), in_dtype=dtype_name(site.in_dtype),
        compute_dtype=dtype_name(site.compute_dtype), out_dtype=dtype_name(site.out_dtype),
        safe=site.safe, reciprocal=quirks.reciprocal(where.get("l", where["y"]), where["y"]),
    )
    stored: dict[str, fx.Node] = {}
    for gi, tokens in enumerate(groups):
        names: list[str] = []
        args: list[Any] = []
        chain: tuple = ()
        if "x" in needs[gi]:
            if gi == 0 and producers is not None:
                names += [f"p{i}" for i in range(len(producers.leaves))]
                args += producers.leaves
                chain = tuple(producers.chain)
            else:
                names.append("x")
                args.append(site.x)
        for v in ("m", "z", "l"):
            if v in needs[gi]:
                names.append(v)
                args.append(stored[v])
        later = set().union(*needs[gi + 1:]) if gi + 1 < len(groups) else set()
        outputs = [v for v in ("m", "z", "l") if where.get(v) == gi and v in later] + (["y"] if where["y"] == gi else [])
        refusal = quirks.refuse_group(tuple(outputs), not isinstance(site.shape[site.dim], int))
        if refusal:
            raise UnsupportedPlanError(f"softmax site {site.name!r} (dim {site.dim} of shape {site.shape}) with plan {plan.text!r}: {refusal}")
        spec = GroupSpec(group=gi + 1, steps=tuple(tokens), inputs=tuple(names), outputs=tuple(outputs), chain=chain,
                         kernel=IN_OUTPUT if plan.in_output else "", **common)
        padded = tuple(args) + (None,) * (MAX_INPUTS - len(args)) + (spec.to_json(),)
        node = emit(GROUP_OPS[len(outputs)], padded, f"g{gi + 1}")
        if len(outputs) == 1:
            stored[outputs[0]] = node
        else:
            for i, v in enumerate(outputs):
                stored[v] = emit(operator.getitem, (node, i), f"g{gi + 1}_{v}")

    out = stored["y"]
    site.node.replace_all_uses_with(out)
    gm.graph.erase_node(site.node)
    dead = list(producers.nodes) if producers else []
    while any(not n.users for n in dead):  # producers now read by nothing (their order is a tree's)
        for n in [n for n in dead if not n.users]:
            gm.graph.erase_node(n)
            dead.remove(n)
    return out


def _check_in_output(site: SoftmaxSite) -> None:
    """`inplace`'s kernel takes a softmax over the innermost dim in policy.IN_OUTPUT_DTYPES."""
    dtypes = site.dtype_names()
    innermost = site.dim == len(site.shape) - 1
    if not in_output_applies(innermost, dtypes):
        what = f"over dim {site.dim} of a rank-{len(site.shape)} tensor" if not innermost else f"in {sorted(dtypes)}"
        raise UnsupportedPlanError(
            f"softmax site {site.name!r} (dim {site.dim} of shape {site.shape}) with policy {IN_OUTPUT!r}: a softmax {what}; "
            f"accepted: {IN_OUTPUT_ACCEPTS} (give this site another preset, e.g. overrides={{{site.name!r}: 'split'}})"
        )
