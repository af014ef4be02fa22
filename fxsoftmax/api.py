"""The public functions: the pass, export, the torch.compile backend and inspection, wired to the `auto`
chooser (fxsoftmax.auto), which the layers below take as an argument."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx as fx

from . import passes
from .auto import AutoChooser
from .backends.artifact import Artifact
from .backends.dynamo import COMPILED_GRAPHS, Backend, CompiledGraph, make_backend
from .backends.importer import EXTERNAL_PARAMS_ABOVE
from .backends.pipeline import Options, build
from .core.policy import DEFAULT_POLICY, Overrides, PolicyLike


def chooser_for(options: Options) -> AutoChooser:
    """The `auto` chooser for these options' device kind and threads."""
    return AutoChooser(options.target.kind, options.threads, device=options.device)


def decompose_softmax(
    module: fx.GraphModule | torch.export.ExportedProgram,
    policy: PolicyLike = DEFAULT_POLICY,
    overrides: Overrides | None = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    chooser: Callable | None = None,
) -> passes.PassResult:
    """Rewrite every floating-point softmax in `module` (in place) into four steps grouped per policy.

    `module` is a torch.fx.GraphModule (ATen-level or torch-level) or a torch.export ExportedProgram.
    `policy` is a preset name or plan string; `overrides` maps glob patterns (node name or module path,
    or "re:<regex>") to policies, or is a callable(site) -> policy|None. A torch-level graph without shape
    metadata (e.g. from torch.fx.symbolic_trace) needs `example_inputs`. `chooser(site) -> (Plan, reason)`
    resolves `auto` (default: the CPU cost model with all cores).
    """
    return passes.decompose_softmax(module, policy, overrides, example_inputs=example_inputs, chooser=chooser or AutoChooser())


def export(
    model: torch.nn.Module,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    policy: PolicyLike = DEFAULT_POLICY,
    overrides: Overrides | None = None,
    device: str = "cpu",
    arch: str | None = None,
    dynamic_shapes: Any = None,
    attention: str = "auto",
    threads: int | None = None,
    extra_flags: Sequence[str] = (),
    external_params_above: int = EXTERNAL_PARAMS_ABOVE,
) -> Artifact:
    """Export `model` with example inputs, rewrite its softmaxes per `policy`, compile it for `device`.

    `device` is one of cpu, cuda, hip, vulkan (`arch` picks the chip, e.g. sm_80, gfx942). `dynamic_shapes`
    is passed to torch.export (use torch.export.Dim) so one module serves several sizes. `attention` places
    scaled_dot_product_attention: "auto" decomposes it on CPU (its softmax becomes a site), on cuda for prefill
    (IREE's kernel kept for a decode step), and keeps IREE's attention kernel on hip and Vulkan; "keep" and
    "decompose" force either. `threads` (default: all cores) is what the
    `auto` policy assumes the module will run with. Parameters over `external_params_above` bytes in all
    stay outside the MLIR (an IREE parameter archive, scope "model").
    """
    options = Options(policy, overrides, device, arch, attention, threads, extra_flags, external_params_above)
    return build(model, args, kwargs, options, chooser_for(options), dynamic_shapes=dynamic_shapes)


def backend(**options: Any) -> Backend:
    """A torch.compile backend with custom settings: `torch.compile(m, backend=fxsoftmax.backend(policy="remat"))`."""
    return make_backend(chooser_for, **options)


def fxsoftmax_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None) -> Callable:
    """Entry point for `torch.compile(model, backend="fxsoftmax", options={...})`."""
    return backend(**(options or {}))(gm, example_inputs)


def compiled_graphs() -> list[CompiledGraph]:
    """Graphs compiled so far in this process by any fxsoftmax backend, oldest first."""
    return list(COMPILED_GRAPHS)
