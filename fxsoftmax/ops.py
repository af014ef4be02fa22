"""The op the pass emits: one plan group, `torch.ops.fxsoftmax.group` (one result) and `group2` (two).

`group(a, b=None, ..., spec)` computes one plan group (`fxsoftmax.group.GroupSpec`, as JSON) from its
inputs. In PyTorch it runs the steps with ATen ops; through iree-turbine it lowers to one pre-formed
`flow.dispatch.region` (`fxsoftmax.group_mlir`), which IREE keeps as exactly one dispatch.
"""

from __future__ import annotations

import torch
from iree.turbine.runtime.op_reg import CustomOp, KernelBuilder, KernelSelection, def_library, impl_helper
from iree.turbine.support.ir_imports import Operation, RankedTensorType

from .group import MAX_INPUTS, GroupSpec, output_shapes, run_group
from .group_mlir import group_function

LIBRARY = def_library("fxsoftmax")
_ARGS = ", ".join(["Tensor a"] + [f"Tensor? a{i}" for i in range(1, MAX_INPUTS)])


class _InlineModule(impl_helper.TemplateLoader):
    def load_template(self, kb: KernelBuilder, name: str, text: str = "") -> Operation:
        return self._parse_module_asm(kb, text)


_loader = _InlineModule()


def _inputs(*tensors):
    return [t for t in tensors if t is not None]


class _Group(CustomOp):
    outputs = 1

    def select(self, ksel: KernelSelection):
        for i in range(MAX_INPUTS):
            ta = ksel.arg_tensor(0) if i == 0 else ksel.arg_optional_tensor(i)
            if ta is not None:
                ta.specialize_dims(*[j for j, s in enumerate(ta.t.shape) if isinstance(s, int)])
        spec = GroupSpec.from_json(ksel.attr_str(MAX_INPUTS).v)
        tensors = [d.t for d in ksel.arg_descs[:MAX_INPUTS] if getattr(d, "t", None) is not None]
        for name, shape in zip(spec.outputs, output_shapes(spec, tensors)):
            rt = ksel.return_new_tensor(shape, getattr(torch, spec.output_dtype(name)))
            rt.specialize_dims(*[j for j, s in enumerate(shape) if isinstance(s, int)])

    def generate(self, ksel: KernelSelection, kb: KernelBuilder):
        spec = GroupSpec.from_json(ksel.arg_descs[MAX_INPUTS].v)
        args = [v for v in kb.arg_bindings[:MAX_INPUTS] if v is not None]
        types = [RankedTensorType(v.type) for v in args]
        infos = [([-1 if t.is_dynamic_dim(i) else t.shape[i] for i in range(t.rank)], str(t.element_type)) for t in types]
        fn, text = group_function(spec, infos)
        func = _loader.inline_template_function(kb, "group", fn, text=text)
        kb.yield_results(*impl_helper.call_function(func, *args))


@CustomOp.register(library=LIBRARY, register_meta=False, register_impl=False)
class group(_Group):
    signature = f"group({_ARGS}, str spec) -> Tensor"


@CustomOp.register(library=LIBRARY, register_meta=False, register_impl=False)
class group2(_Group):
    signature = f"group2({_ARGS}, str spec) -> (Tensor, Tensor)"


def _eager(*args):
    out = run_group(GroupSpec.from_json(args[-1]), _inputs(*args[:-1]))
    return out[0] if len(out) == 1 else out


def _fake(*args):
    spec = GroupSpec.from_json(args[-1])
    tensors = _inputs(*args[:-1])
    out = tuple(
        tensors[0].new_empty(shape, dtype=getattr(torch, spec.output_dtype(name)))
        for name, shape in zip(spec.outputs, output_shapes(spec, tensors))
    )
    return out[0] if len(out) == 1 else out


for _name in ("group", "group2"):
    LIBRARY.impl(_name, _eager, "CompositeExplicitAutograd")
    torch.library.register_fake(f"fxsoftmax::{_name}", _fake, lib=LIBRARY)

GROUP_OPS = {1: torch.ops.fxsoftmax.group.default, 2: torch.ops.fxsoftmax.group2.default}
