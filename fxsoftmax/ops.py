"""The ops the pass emits: the dispatch boundary, and the online max+sum reduction.

`torch.ops.fxsoftmax.boundary(t)`:

In PyTorch it is an identity (a copy, so no output aliases an input). Through iree-turbine it lowers
to `util.optimization_barrier`, which IREE cannot fuse across or fold, so the value is materialized
in global memory between the dispatch that produces it and the one that reads it. The pass puts one
boundary on every tensor a plan group reads from outside itself; a recomputed step in a later group
therefore reads a different SSA value than the earlier group and IREE's CSE cannot merge the two.
"""

from __future__ import annotations

import hashlib

import torch
from iree.turbine.runtime.op_reg import CustomOp, KernelBuilder, KernelSelection, def_library, impl_helper
from iree.compiler.ir import DenseI64ArrayAttr
from iree.turbine.support.ir_imports import (
    ArrayAttr,
    IntegerAttr,
    IntegerType,
    Operation,
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


# ---------------------------------------------------------------------------------------------------
# online_max_sum(x, dim, tag) -> (m, l): steps 1 and 3 in one pass over x (Milakov & Gimelshein 2018,
# arXiv 1805.02867): m' = max(m, x); l = l * exp(m - m') + exp(x - m'). Both results keep `dim` (size 1).
# The running max starts at the most negative finite float, not -inf: a row that is entirely -inf then
# gives l = 0 (not NaN from -inf - -inf), and the partially masked rows stay exact.
# ---------------------------------------------------------------------------------------------------


def _online_eager(x: torch.Tensor, dim: int, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    m = x.amax(dim, keepdim=True).clamp(min=torch.finfo(x.dtype).min)
    return m, torch.exp(x - m).sum(dim, keepdim=True)


def _online_fake(x: torch.Tensor, dim: int, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape = list(x.shape)
    shape[dim] = 1
    return x.new_empty(shape), x.new_empty(shape)


_ONLINE_TEMPLATE = """
module {{
util.func private @{fn}(%x: {xt}) -> ({kt}, {kt}) {{
  %lo = arith.constant {lowest} : {et}
  %zero = arith.constant 0.0 : {et}
  {dims}
  %e = tensor.empty({dynamic}) : {rt}
  %m0 = linalg.fill ins(%lo : {et}) outs(%e : {rt}) -> {rt}
  %l0 = linalg.fill ins(%zero : {et}) outs(%e : {rt}) -> {rt}
  %r:2 = linalg.generic {{indexing_maps = [{xmap}, {rmap}, {rmap}], iterator_types = [{iters}]}}
      ins(%x : {xt}) outs(%m0, %l0 : {rt}, {rt}) {{
  ^bb0(%in: {et}, %m: {et}, %l: {et}):
    %mn = arith.maximumf %m, %in : {et} loc("{tag1}":1:0)
    %a = arith.subf %m, %mn : {et} loc("{tag3}":1:0)
    %ea = math.exp %a : {et} loc("{tag3}":1:0)
    %b = arith.subf %in, %mn : {et} loc("{tag3}":1:0)
    %eb = math.exp %b : {et} loc("{tag3}":1:0)
    %la = arith.mulf %l, %ea : {et} loc("{tag3}":1:0)
    %ln = arith.addf %la, %eb : {et} loc("{tag3}":1:0)
    linalg.yield %mn, %ln : {et}, {et}
  }} -> ({rt}, {rt})
  %mk = tensor.expand_shape %r#0 {reassoc} output_shape [{kshape}] : {rt} into {kt}
  %lk = tensor.expand_shape %r#1 {reassoc} output_shape [{kshape}] : {rt} into {kt}
  util.return %mk, %lk : {kt}, {kt}
}}
}}
"""


class _InlineTemplates(impl_helper.TemplateLoader):
    def load_template(self, kb: KernelBuilder, name: str, **kwargs) -> Operation:
        return self._parse_module_asm(kb, _ONLINE_TEMPLATE.format(**kwargs))


_templates = _InlineTemplates()


@CustomOp.register(library=LIBRARY, register_meta=False, register_impl=False)
class online_max_sum(CustomOp):
    signature = "online_max_sum(Tensor x, int dim, str tag) -> (Tensor, Tensor)"

    def select(self, ksel: KernelSelection):
        ta = ksel.arg_tensor(0)
        dim = ksel.attr_int(1).v
        ksel.attr_str(2)
        static = [i for i, s in enumerate(ta.t.shape) if isinstance(s, int)]
        ta.specialize_dims(*static)
        shape = list(ta.t.shape)
        shape[dim] = 1
        for _ in range(2):
            ksel.return_new_tensor(shape, ta.t.dtype).specialize_dims(*sorted(set(static) | {dim}))

    def generate(self, ksel: KernelSelection, kb: KernelBuilder):
        x = kb.arg_bindings[0]
        dim, tag = ksel.arg_descs[1].v, ksel.arg_descs[2].v
        xt = RankedTensorType(x.type)
        rank, et = xt.rank, str(xt.element_type)
        dims = [("?" if xt.is_dynamic_dim(i) else str(xt.shape[i])) for i in range(rank)]
        kept = [i for i in range(rank) if i != dim]
        rt = f"tensor<{''.join(dims[i] + 'x' for i in kept)}{et}>"
        kdims = [("1" if i == dim else dims[i]) for i in range(rank)]
        kt = f"tensor<{'x'.join(kdims)}x{et}>"
        dyn = [i for i in kept if xt.is_dynamic_dim(i)]
        idx = ", ".join(f"d{i}" for i in range(rank))
        # reduced dims -> keepdim dims: the unit dim joins its neighbour's group
        groups = [[i] for i in kept]
        if groups:
            groups[max(0, sum(1 for i in kept if i < dim) - 1)].append(dim)
            groups = [sorted(g) for g in groups]
        site = tag.rsplit(":", 1)[0]
        lowest = {"f32": "0xFF7FFFFF", "f64": "0xFFEFFFFFFFFFFFFF"}[et]
        fn = f"fxsoftmax_online_{hashlib.sha1(f'{tag}|{xt}|{dim}'.encode()).hexdigest()[:12]}"
        func = _templates.inline_template_function(
            kb, "online", fn, fn=fn, xt=str(xt), rt=rt, kt=kt, et=et, lowest=lowest,
            dims="\n  ".join(f"%c{i} = arith.constant {i} : index\n  %n{i} = tensor.dim %x, %c{i} : {xt}" for i in dyn),
            dynamic=", ".join(f"%n{i}" for i in dyn),
            xmap=f"affine_map<({idx}) -> ({idx})>",
            rmap=f"affine_map<({idx}) -> ({', '.join(f'd{i}' for i in kept)})>",
            iters=", ".join('"reduction"' if i == dim else '"parallel"' for i in range(rank)),
            reassoc="[" + ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups) + "]",
            kshape=", ".join(f"%n{i}" if i in dyn else kdims[i] for i in range(rank)),
            tag1=f"{site}:s1", tag3=f"{site}:s3",
        )
        kb.yield_results(*impl_helper.call_function(func, x))


LIBRARY.impl("online_max_sum", _online_eager, "CompositeExplicitAutograd")
torch.library.register_fake("fxsoftmax::online_max_sum", _online_fake, lib=LIBRARY)

ONLINE_MAX_SUM = torch.ops.fxsoftmax.online_max_sum.default
