"""ExportedProgram -> MLIR with iree-turbine: weights inlined or kept as named parameters, and the
output-storage entry point (fxsoftmax.backends.entry)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .. import quirks
from . import entry

PARAMETER_SCOPE = "model"  # the scope externalized parameters are named in (iree-run-module --parameters=model=...)
EXTERNAL_PARAMS_ABOVE = 32 << 20  # bytes of parameters above which they leave the MLIR


def external_parameters(ep: torch.export.ExportedProgram, above: int = EXTERNAL_PARAMS_ABOVE) -> dict[str, torch.Tensor]:
    """The program's parameters and buffers by name if together they are over `above` bytes (or if
    iree-turbine cannot inline their dtype), else those iree-turbine cannot inline."""
    tensors = {k: v for k, v in {**ep.state_dict, **ep.constants}.items() if isinstance(v, torch.Tensor)}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total > above or quirks.must_externalize({t.dtype for t in tensors.values()}):
        return tensors
    updated = set(ep.graph_signature.buffers_to_mutate.values())
    return {k: t for k, t in tensors.items() if quirks.must_externalize_buffer(tuple(t.shape), k in updated)}


def program_to_mlir(ep: torch.export.ExportedProgram, parameters: Mapping[str, torch.Tensor] | None = None,
                    stored: Sequence[bool] = ()) -> str:
    """Import an ExportedProgram with iree-turbine; MLIR text with locations (the report needs them).
    `parameters` are imported as named IREE parameters (scope "model") instead of inline constants; results
    marked in `stored` also get an entry point that writes them into caller-provided storage."""
    from iree.turbine import aot
    from iree.turbine.aot import ExternalTensorTrait

    for name, t in (parameters or {}).items():
        ExternalTensorTrait(external_scope=PARAMETER_SCOPE, external_name=name).set(t)
    try:
        out = aot.export(ep)
        asm = out.mlir_module.get_asm(enable_debug_info=True)
        found = entry.signature(out.mlir_module) if any(stored) else None
        return entry.with_output_storage(asm, *found, list(stored)) if found else asm
    finally:  # the traits sit on the user's own tensors
        for t in (parameters or {}).values():
            t.__dict__.pop("_turbine_external_tensor_trait", None)
