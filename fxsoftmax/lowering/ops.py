"""iree-turbine's lowering of the group ops (fxsoftmax.core.op): each becomes a call to the group's
function (fxsoftmax.lowering.region or .inplace), which holds exactly one dispatch."""

from __future__ import annotations

import torch
from iree.turbine.runtime.op_reg import CustomOp, KernelBuilder, KernelSelection, impl_helper
from iree.turbine.runtime.op_reg.base import ALL_CUSTOM_OP_REGS
from iree.turbine.support.ir_imports import Operation, RankedTensorType

from ..core.dtypes import torch_dtype
from ..core.group import MAX_INPUTS, GroupSpec, output_shapes
from ..core.op import ARGS, LIBRARY, RESULTS
from .inplace import in_output_function
from .region import group_function


class _InlineModule(impl_helper.TemplateLoader):
    def load_template(self, kb: KernelBuilder, name: str, text: str = "") -> Operation:
        return self._parse_module_asm(kb, text)


_loader = _InlineModule()


class GroupLowering(CustomOp):
    """The turbine side of an op defined elsewhere: kernel selection (shapes) and generation (MLIR)."""

    def __init__(self, name: str):  # the op exists already (core.op); only register how to lower it
        self.name, self.library, self.op = name, LIBRARY, getattr(torch.ops.fxsoftmax, name)
        self.cache_key_base = f"{LIBRARY.ns}.{LIBRARY.kind}::{name}"
        ALL_CUSTOM_OP_REGS[f"{LIBRARY.ns}.{name}"] = self

    @property
    def signature(self) -> str:
        return f"{self.name}({ARGS}, str spec) -> {RESULTS[self.name]}"

    def select(self, ksel: KernelSelection):
        for i in range(MAX_INPUTS):
            ta = ksel.arg_tensor(0) if i == 0 else ksel.arg_optional_tensor(i)
            if ta is not None:
                ta.specialize_dims(*[j for j, s in enumerate(ta.t.shape) if isinstance(s, int)])
        spec = GroupSpec.from_json(ksel.attr_str(MAX_INPUTS).v)
        tensors = [d.t for d in ksel.arg_descs[:MAX_INPUTS] if getattr(d, "t", None) is not None]
        for name, shape in zip(spec.outputs, output_shapes(spec, tensors)):
            rt = ksel.return_new_tensor(shape, torch_dtype(spec.output_dtype(name)))
            rt.specialize_dims(*[j for j, s in enumerate(shape) if isinstance(s, int)])

    def generate(self, ksel: KernelSelection, kb: KernelBuilder):
        spec = GroupSpec.from_json(ksel.arg_descs[MAX_INPUTS].v)
        args = [v for v in kb.arg_bindings[:MAX_INPUTS] if v is not None]
        types = [RankedTensorType(v.type) for v in args]
        infos = [([-1 if t.is_dynamic_dim(i) else t.shape[i] for i in range(t.rank)], str(t.element_type)) for t in types]
        fn, text = in_output_function(spec, infos[0][0]) if spec.kernel else group_function(spec, infos)
        func = _loader.inline_template_function(kb, "group", fn, text=text)
        kb.yield_results(*impl_helper.call_function(func, *args))


LOWERINGS = [GroupLowering(name) for name in RESULTS]
