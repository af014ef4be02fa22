"""The dispatch-boundary op: `torch.ops.fxsoftmax.boundary(t)`.

In PyTorch it is an identity (a copy, so no output aliases an input). Through iree-turbine it lowers
to `util.optimization_barrier`, which IREE cannot fuse across or fold, so the value is materialized
in global memory between the dispatch that produces it and the one that reads it. The pass puts one
boundary on every tensor a plan group reads from outside itself; a recomputed step in a later group
therefore reads a different SSA value than the earlier group and IREE's CSE cannot merge the two.
"""

from __future__ import annotations

import torch
from iree.turbine.runtime.op_reg import CustomOp, KernelBuilder, KernelSelection, def_library
from iree.compiler.ir import DenseI64ArrayAttr
from iree.turbine.support.ir_imports import (
    ArrayAttr,
    IntegerAttr,
    IntegerType,
    RankedTensorType,
    ShapedType,
    flow_d,
    tensor_d,
    util_d,
)

LIBRARY = def_library("fxsoftmax")


@CustomOp.register(library=LIBRARY, register_meta=False, register_impl=False)
class boundary(CustomOp):
    signature = "boundary(Tensor t) -> Tensor"

    def select(self, ksel: KernelSelection):
        ta = ksel.arg_tensor(0)
        static = [i for i, s in enumerate(ta.t.shape) if isinstance(s, int)]
        ta.specialize_dims(*static)
        ksel.return_tensor(ta.t).specialize_dims(*static)

    def generate(self, ksel: KernelSelection, kb: KernelBuilder):
        t = kb.arg_bindings[0]
        rtt = RankedTensorType(t.type)
        dims = [tensor_d.dim(t, kb.constant_index(i)) for i in range(rtt.rank) if rtt.is_dynamic_dim(i)]
        groups = _unit_dim_groups(rtt)
        v = t
        if groups is not None:
            # IREE drops unit dims; a barrier on the unit-dim form would leave reshapes between a
            # value and its barrier, which stops IREE fusing the value's producer group into one dispatch.
            i64 = IntegerType.get_signless(64)
            reassoc = ArrayAttr.get([ArrayAttr.get([IntegerAttr.get(i64, d) for d in g]) for g in groups])
            sizes = [ShapedType.get_dynamic_size() if any(rtt.is_dynamic_dim(d) for d in g) else _prod(rtt.shape[d] for d in g) for g in groups]
            v = tensor_d.CollapseShapeOp(RankedTensorType.get(sizes, rtt.element_type), t, reassoc).result
        v = util_d.OptimizationBarrierOp([v.type], [v]).results[0]
        if dims:  # the barrier hides shapes; restate the dynamic dims so IREE can still resolve them
            v = flow_d.TensorTieShapeOp(v, dims).result
        if groups is not None:
            v = tensor_d.ExpandShapeOp(rtt, v, reassoc, dims, DenseI64ArrayAttr.get(list(rtt.shape))).result
        kb.yield_results(v)


def _unit_dim_groups(rtt: RankedTensorType) -> list[list[int]] | None:
    """Reassociation that drops static unit dims, or None if there are none."""
    unit = [not rtt.is_dynamic_dim(i) and rtt.shape[i] == 1 for i in range(rtt.rank)]
    if not any(unit):
        return None
    groups: list[list[int]] = []
    pending: list[int] = []
    for i, is_unit in enumerate(unit):
        pending.append(i)
        if not is_unit:
            groups.append(pending)
            pending = []
    if pending and groups:
        groups[-1].extend(pending)
    return groups  # [] (all dims unit) collapses to a 0-d tensor


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _eager(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def _fake(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t)


LIBRARY.impl("boundary", _eager, "CompositeExplicitAutograd")
torch.library.register_fake("fxsoftmax::boundary", _fake, lib=LIBRARY)
torch.library.register_autograd(
    "fxsoftmax::boundary", lambda ctx, grad: grad, lib=LIBRARY
)

BOUNDARY = torch.ops.fxsoftmax.boundary.default
