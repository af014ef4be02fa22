"""The one export pipeline: options validated once; the model through torch.export; an ordered list of
graph steps; the program imported and compiled. `fxsoftmax.export`, the torch.compile backend, the CLI
and the zoo all call `build`."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from .. import quirks
from ..core.policy import DEFAULT_POLICY, IN_OUTPUT, Overrides, Plan, PolicyLike, PolicyMap
from ..passes import decompose_softmax
from ..passes.attention import attention_decompositions, fold_sdpa_scale, kept_attention, may_keep
from ..passes.checks import refusal
from . import entry, flags, gaps
from .artifact import Artifact, Signature
from .compiler import IreeCompileError, check_target, compile_cached
from .importer import EXTERNAL_PARAMS_ABOVE, external_parameters, program_to_mlir
from .targets import Target

ATTENTION = ("auto", "keep", "decompose")
Chooser = Callable[[Any], "tuple[Plan, str]"]  # site -> (plan, reason): resolves `auto` (fxsoftmax.auto)


@dataclass(frozen=True)
class Options:
    """Everything an export is asked for, validated once, before the slow part."""

    policy: PolicyLike = DEFAULT_POLICY
    overrides: Overrides | None = None
    device: str = "cpu"
    arch: str | None = None
    attention: str = "auto"  # "auto": placed per device (quirks.attention_placement); or "keep", "decompose"
    threads: int | None = None  # what `auto` assumes the module runs with (default: all cores)
    extra_flags: Sequence[str] = ()
    external_params_above: int = EXTERNAL_PARAMS_ABOVE  # bytes of parameters above which they leave the MLIR

    def __post_init__(self) -> None:
        check_target(self.target)
        PolicyMap(self.policy, self.overrides)
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention mode {self.attention!r}; accepted: {', '.join(ATTENTION)}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive integer or None (all cores), got {self.threads!r}")
        if isinstance(self.extra_flags, str) or not all(isinstance(f, str) for f in self.extra_flags):
            raise ValueError(f"extra_flags must be a list of iree-compile flags (strings), got {self.extra_flags!r}")
        if not (isinstance(self.external_params_above, int) and self.external_params_above >= 0):
            raise ValueError(f"external_params_above must be a number of bytes >= 0, got {self.external_params_above!r}")
        object.__setattr__(self, "extra_flags", tuple(self.extra_flags))

    @property
    def target(self) -> Target:
        return Target(self.device, self.arch)

    def attention_placement(self) -> tuple[str, str]:
        """(an attention mode of fxsoftmax.passes.attention, why) for this device."""
        if self.attention != "auto":
            return self.attention, f"attention={self.attention!r}"
        return quirks.attention_placement(self.device)


@dataclass
class _Run:
    """What the graph steps share while one program goes through them."""

    options: Options
    chooser: Chooser | None
    what: str
    attention: tuple[str, str]
    sites: list = field(default_factory=list)


def _fold_scale_of_kept_attention(ep: torch.export.ExportedProgram, run: _Run) -> None:
    if may_keep(run.attention[0]):
        fold_sdpa_scale(ep.graph_module)


def _refuse_what_iree_cannot_run(ep: torch.export.ExportedProgram, run: _Run) -> None:
    refused = refusal(ep)
    if refused:
        raise ValueError(f"cannot export {run.what}: {refused}")


def _rewrite_softmax(ep: torch.export.ExportedProgram, run: _Run) -> None:
    mode, why = run.attention
    kept = f"{why}: fused attention left to IREE's attention kernel"
    run.sites = decompose_softmax(ep, run.options.policy, run.options.overrides, chooser=run.chooser, kept_reason=kept).sites


def _refuse_cpu_only_plans(ep: torch.export.ExportedProgram, run: _Run) -> None:
    on_cpu_only = [s.name for s in run.sites if s.plan == IN_OUTPUT]
    if on_cpu_only and run.options.device != "cpu":
        raise ValueError(f"cannot export {run.what} for {run.options.target}: policy {IN_OUTPUT!r} (sites {on_cpu_only}) is a "
                         f"hand-written CPU executable; accepted on {run.options.device}: every other preset")


GRAPH_STEPS = (_fold_scale_of_kept_attention, _refuse_what_iree_cannot_run, _rewrite_softmax, _refuse_cpu_only_plans)


def compile_program(ep: torch.export.ExportedProgram, options: Options, chooser: Chooser | None = None, *,
                    what: str = "the model", attention: tuple[str, str] | None = None) -> Artifact:
    """Run the graph steps on an ExportedProgram (in place), import it with iree-turbine, compile it.
    `attention`: where attention went and why (default: the options' placement)."""
    run = _Run(options, chooser, what, attention or options.attention_placement())
    for step in GRAPH_STEPS:
        step(ep, run)
    target = options.target
    parameters = external_parameters(ep, options.external_params_above)
    stored = entry.storable(ep) if target.device == "cpu" else []
    mlir = program_to_mlir(ep, parameters, stored)
    module_flags = flags.module_flags(target, [s.status for s in run.sites], options.extra_flags)
    compiled = compile_cached(mlir, module_flags, what=f"{what} for {target}", phases=("flow",))
    return Artifact(mlir, compiled.output, target, run.sites, module_flags, compiled.phases["flow"], ep.call_spec.in_spec,
                    ep.call_spec.out_spec, _constants(ep), parameters, Signature.of(ep), run.attention[1], stored,
                    entry.written_inputs(ep))


def export_program(model: torch.nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None,
                   dynamic_shapes: Any = None, attention: str = "keep", decompose: frozenset = frozenset()) -> torch.export.ExportedProgram:
    """torch.export, plus the decompositions iree-turbine applies to nn.Modules, PyTorch's own decompositions
    of the ops in `decompose` (ops IREE's importer cannot lower), and attention kept or decomposed."""
    from iree.turbine.aot import decompositions

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export expects a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad():
        ep = _torch_export(model, args, kwargs, dynamic_shapes)
        if _buffers_seen_as_constants(ep):
            ep = _torch_export(model, args, kwargs, dynamic_shapes, strict=True)
    table = decompositions.current_aot_decompositions()
    table.update(gaps.decompositions(decompose))
    table.update(attention_decompositions(attention))
    return ep.run_decompositions(table)


def build(model: torch.nn.Module, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, options: Options | None = None,
          chooser: Chooser | None = None, *, dynamic_shapes: Any = None, what: str | None = None,
          programs: dict | None = None) -> Artifact:
    """Export, rewrite, import and compile `model`. An op IREE's importer cannot lower is decomposed by
    PyTorch and the export redone (fxsoftmax.backends.gaps). Where `attention="auto"` kept IREE's attention
    kernel and IREE cannot compile the module, attention is decomposed instead, and the report says so.
    `programs` caches torch.export results across calls on the same model (the graph steps work on a copy)."""
    options = options or Options()
    what = what or type(model).__name__
    placement = options.attention_placement()
    while True:
        key = (placement[0], frozenset(gaps.LEARNED))
        if programs is None:
            ep = export_program(model, args, kwargs, dynamic_shapes, *key)
        else:
            if key not in programs:
                programs[key] = export_program(model, args, kwargs, dynamic_shapes, *key)
            ep = copy.deepcopy(programs[key])
        try:
            return compile_program(ep, options, chooser, what=what, attention=placement)
        except IreeCompileError as e:
            more = gaps.importer_gaps(e, ep) - gaps.LEARNED
            if more:
                gaps.LEARNED.update(more)  # later exports in this process decompose them up front
            elif options.attention == "auto" and may_keep(placement[0]) and kept_attention(ep.graph_module):
                first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
                placement = ("decompose", f"attention='auto': IREE could not compile its attention kernel for "
                                          f"{options.target} ({first[:160]}); decomposed into matmuls and a softmax site instead")
            else:
                raise


def _constants(ep: torch.export.ExportedProgram) -> list[Any] | None:
    """The non-tensor leaves of the example call the program was exported with."""
    from torch.utils import _pytree as pytree

    example = getattr(ep, "example_inputs", None)
    if example is None:
        return None
    return [a for a in pytree.tree_leaves(example) if not isinstance(a, torch.Tensor)]


def _torch_export(model: torch.nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any] | None, dynamic_shapes: Any,
                  strict: bool = False) -> torch.export.ExportedProgram:
    """torch.export.export; an output it cannot flatten into tensors (a Hugging Face KV cache) is refused
    with what to do instead."""
    try:
        return torch.export.export(model, tuple(args), dict(kwargs or {}), dynamic_shapes=dynamic_shapes, strict=strict)
    except RuntimeError as e:
        found = re.search(r"Found <class '([\w.]+)'> in output, which is not a known type", str(e))
        if not found:
            raise
        raise ValueError(
            f"{type(model).__name__} returns a {found.group(1)}, which torch.export cannot flatten into tensors; "
            "accepted: outputs of tensors, tuples, lists, dicts and Hugging Face ModelOutputs. For a Hugging Face model "
            "returning its KV cache, export it without: model.config.use_cache = False, or kwargs={'use_cache': False} "
            "(a decode step over a static cache: docs/usage.md)") from None


def _buffers_seen_as_constants(ep: torch.export.ExportedProgram) -> bool:
    """Whether the program reads a registered buffer through another object (as transformers' static KV
    cache does): non-strict export then lifts it as a constant and its in-place updates are lost, while
    strict export (dynamo, as ExecuTorch uses) keeps it a buffer."""
    from torch.export.graph_signature import InputKind

    def storages(kind: InputKind) -> set:
        tensors = [{**ep.state_dict, **ep.constants}[i.target] for i in ep.graph_signature.input_specs if i.kind == kind]
        return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor) and t.numel()}

    return bool(storages(InputKind.BUFFER) & storages(InputKind.CONSTANT_TENSOR))
