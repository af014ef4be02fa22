"""Model -> torch.export -> softmax pass -> iree-turbine MLIR -> IREE VMFB, and the runnable result."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils import _pytree as pytree

from .. import quirks
from ..costmodel import AutoChooser
from ..passes import SiteReport, decompose_softmax
from ..passes.attention import attention_decompositions, fold_sdpa_scale
from ..policy import DEFAULT_POLICY, IN_OUTPUT, Overrides, PolicyLike, PolicyMap
from .compiler import CompileResult, IreeCompileError, iree_compile
from .runtime import PARAMETER_SCOPE, DeviceUnavailableError, IreeRunner, parameter_index
from .vulkan import SOFTWARE_VULKAN_ARCH
from .targets import Target, check_target


def _constants(ep: torch.export.ExportedProgram) -> list[Any] | None:
    """The non-tensor leaves of the example call the program was exported with."""
    example = getattr(ep, "example_inputs", None)
    if example is None:
        return None
    return [a for a in pytree.tree_leaves(example) if not isinstance(a, torch.Tensor)]


def _refuse_cumsum(gm: torch.fx.GraphModule) -> str | None:
    """quirks.refuse_cumsum for every cumsum in the graph."""

    def truncates(node: Any) -> bool:  # int64 -> int32
        if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and "val" in node.meta):
            return False
        src = node.args[0].meta.get("val") if node.args and isinstance(node.args[0], torch.fx.Node) else None
        return getattr(src, "dtype", None) == torch.int64 and node.meta["val"].dtype == torch.int32

    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.cumsum.default:
            x, dim = node.args[0], node.args[1]
            dynamic = not isinstance(x.meta["val"].shape[dim], int)
            refusal = quirks.refuse_cumsum(dynamic, truncates(x) or any(truncates(u) for u in node.users))
            if refusal:
                return f"{node.name}: {refusal}"
    return None


def _signature_dtypes(ep: torch.export.ExportedProgram) -> set:
    """dtypes of the program's user inputs and outputs."""
    names = set(ep.graph_signature.user_inputs) | set(ep.graph_signature.user_outputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.name in names]
    return {v.dtype for v in vals if isinstance(v, torch.Tensor)}


EXTERNAL_PARAMS_ABOVE = 32 << 20  # bytes of parameters above which they leave the MLIR


@dataclass
class Artifact:
    """A compiled IREE module for one model, plus what it came from. Call it like the model."""

    mlir: str
    vmfb: bytes
    target: Target
    sites: list[SiteReport]
    flags: list[str]
    flow_ir: str = ""  # the module as IREE had it after forming dispatches (with locations)
    in_spec: pytree.TreeSpec | None = None
    out_spec: pytree.TreeSpec | None = None
    constants: list[Any] | None = None  # the non-tensor call arguments the module was exported with (baked in)
    # parameters the module loads by name from scope PARAMETER_SCOPE ("model") (an IREE parameter archive when
    # saved): tensors, or the path of a .irpa file; empty when the weights are inlined in the MLIR
    parameters: dict[str, torch.Tensor] | str = field(default_factory=dict, repr=False)
    _runners: dict[str, IreeRunner] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        rewritten = sum(s.status == "rewritten" for s in self.sites)
        params = f", parameters: {len(self.parameters)} tensors outside the MLIR" if isinstance(self.parameters, dict) and self.parameters else ""
        return (f"Artifact(target {self.target}, {len(self.sites)} softmax site(s), {rewritten} rewritten, "
                f"VMFB {len(self.vmfb):,} B, MLIR {len(self.mlir):,} chars{params})")

    def runner(self, driver: str | None = None) -> IreeRunner:
        """The module loaded on `driver` (default: the target's driver); loaded once per driver."""
        driver = driver or self.target.driver
        if driver not in self._runners:
            runner = IreeRunner(self.vmfb, driver, parameters=self.parameters)
            if runner.opened.software_vulkan and self.target.chip != SOFTWARE_VULKAN_ARCH:
                raise DeviceUnavailableError(
                    f"the only Vulkan device is {runner.opened.description}; this module was compiled for "
                    f"{self.target.chip!r}, whose reductions give wrong results on it (subgroups of 8 lanes); "
                    f"compile with arch={SOFTWARE_VULKAN_ARCH!r} to run here"
                )
            self._runners[driver] = runner
        return self._runners[driver]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flat, spec = pytree.tree_flatten((args, kwargs))
        if self.in_spec is not None and spec != self.in_spec:
            raise ValueError(f"inputs do not have the structure the module was exported with:\n got {spec}\n want {self.in_spec}")
        if self.constants is not None:
            given = [a for a in flat if not isinstance(a, torch.Tensor)]
            if given != self.constants:
                raise ValueError(f"non-tensor arguments {given} differ from the ones the module was exported with "
                                 f"{self.constants}; they are compiled into the module: export again with these values")
        outs = self.runner()(*[t for t in flat if isinstance(t, torch.Tensor)])
        return pytree.tree_unflatten(outs, self.out_spec) if self.out_spec is not None else outs

    def save(self, path: str | os.PathLike) -> None:
        """Write the VMFB (atomically: no half-written file on failure)."""
        _atomic_write(path, self.vmfb)

    def save_mlir(self, path: str | os.PathLike) -> None:
        _atomic_write(path, self.mlir.encode())

    def save_parameters(self, path: str | os.PathLike) -> None:
        """Write the externalized parameters as an IREE parameter archive (.irpa), atomically."""
        if not isinstance(self.parameters, dict) or not self.parameters:
            raise ValueError("this module has no externalized parameters (its weights are inlined in the MLIR)")
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".irpa")
        os.close(fd)
        try:
            parameter_index(self.parameters).create_archive_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


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
    attention: str = "keep",
    threads: int | None = None,
    extra_flags: Sequence[str] = (),
    external_params_above: int = EXTERNAL_PARAMS_ABOVE,
) -> Artifact:
    """Export `model` with example inputs, rewrite its softmaxes per `policy`, compile it for `device`.

    `device` is one of cpu, cuda, hip, vulkan (`arch` picks the chip, e.g. sm_80, gfx942). `dynamic_shapes`
    is passed to torch.export (use torch.export.Dim) so one module serves several sizes. `attention`
    "keep" leaves scaled_dot_product_attention to IREE's attention kernel; "decompose" rewrites it to
    matmuls and a softmax, which the policy then applies to. `threads` (default: all cores) is what the
    `auto` policy assumes the module will run with. Parameters whose total size is over
    `external_params_above` bytes stay outside the MLIR (an IREE parameter archive, scope "model").
    """
    target = Target(device, arch)
    check_target(target)
    PolicyMap(policy, overrides)  # fail on a bad policy before the slow export
    attention_decompositions(attention)
    return build(
        lambda decompose: export_program(model, args, kwargs, dynamic_shapes, attention, decompose),
        lambda ep: compile_program(
            ep, policy, overrides, target, extra_flags, what=type(model).__name__, threads=threads, external_params_above=external_params_above
        ),
    )


def build(make_program: Callable[[set], torch.export.ExportedProgram], compile: Callable[[torch.export.ExportedProgram], Artifact]) -> Artifact:
    """Export and compile; an op IREE's importer cannot lower is decomposed by PyTorch and the export redone."""
    while True:
        ep = make_program(set(_LEARNED_GAPS))
        try:
            return compile(ep)
        except IreeCompileError as e:
            more = importer_gaps(e, ep) - _LEARNED_GAPS
            if not more:
                raise
            _LEARNED_GAPS.update(more)  # later exports in this process decompose them up front


# Ops found by the rule in importer_gaps() during this process.
_LEARNED_GAPS: set = set()


def compile_program(
    ep: torch.export.ExportedProgram,
    policy: PolicyLike,
    overrides: Overrides | None,
    target: Target,
    extra_flags: Sequence[str] = (),
    *,
    what: str = "the model",
    threads: int | None = None,
    external_params_above: int = EXTERNAL_PARAMS_ABOVE,
) -> Artifact:
    """Rewrite an ExportedProgram's softmaxes (in place), import it with iree-turbine, compile it.
    `threads` (default: all cores) is what the `auto` policy assumes."""
    refusal = quirks.refuse_dtypes(_signature_dtypes(ep)) or _refuse_cumsum(ep.graph_module)
    if refusal:
        raise ValueError(f"cannot export {what}: {refusal}")
    result = decompose_softmax(ep, policy, overrides, chooser=AutoChooser(target.kind, threads))
    on_cpu_only = [s.name for s in result.sites if s.plan == IN_OUTPUT]
    if on_cpu_only and target.device != "cpu":
        raise ValueError(f"cannot export {what} for {target}: policy {IN_OUTPUT!r} (sites {on_cpu_only}) is a hand-written CPU "
                         f"executable; accepted on {target.device}: every other preset")
    parameters = external_parameters(ep, external_params_above)
    mlir = program_to_mlir(ep, parameters)
    flags = target.compile_flags([s.status for s in result.sites]) + list(extra_flags)
    compiled = compile_cached(mlir, flags, what=f"{what} for {target}", phases=("flow",))
    return Artifact(
        mlir, compiled.output, target, result.sites, flags, compiled.phases["flow"], ep.call_spec.in_spec, ep.call_spec.out_spec,
        _constants(ep), parameters,
    )


def export_program(
    model: torch.nn.Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    dynamic_shapes: Any = None,
    attention: str = "keep",
    decompose: set = frozenset(),
) -> torch.export.ExportedProgram:
    """torch.export plus the decompositions iree-turbine applies to nn.Modules, and PyTorch's own
    decompositions of the ops in `decompose` (ops IREE's importer cannot lower)."""
    from iree.turbine.aot import decompositions

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export expects a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad():
        ep = torch.export.export(model, tuple(args), dict(kwargs or {}), dynamic_shapes=dynamic_shapes)
        if _buffers_seen_as_constants(ep):
            ep = torch.export.export(model, tuple(args), dict(kwargs or {}), dynamic_shapes=dynamic_shapes, strict=True)
    table = decompositions.current_aot_decompositions()
    defaults = torch.export.default_decompositions()
    table.update({op: defaults[op] for op in (*_KNOWN_GAPS, *decompose)})
    table.update(attention_decompositions(attention))
    ep = ep.run_decompositions(table)
    fold_sdpa_scale(ep.graph_module)
    return ep


def _buffers_seen_as_constants(ep: torch.export.ExportedProgram) -> bool:
    """Whether the program reads a registered buffer through another object (as transformers' static KV
    cache does): non-strict export then lifts it as a constant and its in-place updates are lost, while
    strict export (dynamo, as ExecuTorch uses) keeps it a buffer."""
    from torch.export.graph_signature import InputKind

    def storages(kind: InputKind) -> set:
        tensors = [{**ep.state_dict, **ep.constants}[i.target] for i in ep.graph_signature.input_specs if i.kind == kind]
        return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor) and t.numel()}

    return bool(storages(InputKind.BUFFER) & storages(InputKind.CONSTANT_TENSOR))


# Ops IREE 3.9's importer cannot lower, found by the rule in importer_gaps(), decomposed up front so that
# the common Hugging Face mask code does not cost a failed compile first.
_KNOWN_GAPS = (torch.ops.aten.__and__.Tensor, torch.ops.aten.__or__.Tensor)
_NOT_LEGALIZED = re.compile(r"""(?:name = "|failed to legalize operation ')torch\.(aten\.\w+)""")


_LOCATED_ERROR = re.compile(r"^(\S+):(\d+):\d+: error:", re.MULTILINE)  # a source file, or dynamo's <eval_with_key>.N


def importer_gaps(error: IreeCompileError, ep: torch.export.ExportedProgram) -> set:
    """Ops of `ep` IREE could not lower that PyTorch can decompose: those named as not legalized, and
    those at the source line of an error. Raises an UnsupportedOpError naming a not-legalized op that
    PyTorch cannot decompose."""
    defaults = torch.export.default_decompositions()
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    found, stuck = set(), []
    for name in sorted(set(_NOT_LEGALIZED.findall(error.stderr))):
        usable = {n.target for n in nodes if str(n.target).rsplit(".", 1)[0] == name and n.target in defaults}
        found |= usable
        if not usable:
            stuck.append(name)
    if stuck:
        raise UnsupportedOpError(
            f"IREE's importer cannot lower {', '.join(stuck)} and PyTorch has no decomposition for it; "
            "accepted: models whose ops IREE lowers or PyTorch decomposes",
            error.stderr,
        ) from error
    for path, line in _LOCATED_ERROR.findall(error.stderr):
        frame = f'File "{path}", line {line},'
        found |= {n.target for n in nodes if n.target in defaults and frame in _innermost_frame(n)}
    return found


def _innermost_frame(node: torch.fx.Node) -> str:
    frames = [l for l in (node.meta.get("stack_trace") or "").splitlines() if l.strip().startswith("File ")]
    return frames[-1] if frames else ""


class UnsupportedOpError(IreeCompileError):
    """The model holds an op that neither IREE's importer nor PyTorch's decompositions can lower."""

    def __init__(self, message: str, stderr: str):
        self.stderr = stderr
        RuntimeError.__init__(self, message)


_COMPILED: OrderedDict[str, CompileResult] = OrderedDict()
COMPILE_CACHE_ENTRIES = 32  # the most recent compiles kept in this process


def compile_cached(mlir: str, flags: Sequence[str], *, what: str, phases: Sequence[str] = ()) -> CompileResult:
    """iree-compile, memoized in this process on (MLIR text, flags, phases kept); least recently used
    entries beyond COMPILE_CACHE_ENTRIES are dropped."""
    key = hashlib.sha256("\0".join([mlir, *flags, "|", *phases]).encode()).hexdigest()
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
    else:
        _COMPILED[key] = iree_compile(mlir, flags, what=what, phases=phases)
        while len(_COMPILED) > COMPILE_CACHE_ENTRIES:
            _COMPILED.popitem(last=False)
    return _COMPILED[key]


def external_parameters(ep: torch.export.ExportedProgram, above: int = EXTERNAL_PARAMS_ABOVE) -> dict[str, torch.Tensor]:
    """The program's parameters and buffers by name if together they are over `above` bytes (or if
    iree-turbine cannot inline their dtype), else those iree-turbine cannot inline."""
    tensors = {k: v for k, v in {**ep.state_dict, **ep.constants}.items() if isinstance(v, torch.Tensor)}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total > above or quirks.must_externalize({t.dtype for t in tensors.values()}):
        return tensors
    updated = set(ep.graph_signature.buffers_to_mutate.values())
    return {k: t for k, t in tensors.items() if quirks.must_externalize_buffer(tuple(t.shape), k in updated)}


def program_to_mlir(ep: torch.export.ExportedProgram, parameters: Mapping[str, torch.Tensor] | None = None) -> str:
    """Import an ExportedProgram with iree-turbine; MLIR text with locations (the report needs them).
    `parameters` are imported as named IREE parameters (scope "model") instead of inline constants."""
    from iree.turbine import aot
    from iree.turbine.aot import ExternalTensorTrait

    for name, t in (parameters or {}).items():
        ExternalTensorTrait(external_scope=PARAMETER_SCOPE, external_name=name).set(t)
    try:
        out = aot.export(ep)
        return out.mlir_module.get_asm(enable_debug_info=True)
    finally:  # the traits sit on the user's own tensors
        for t in (parameters or {}).values():
            t.__dict__.pop("_turbine_external_tensor_trait", None)


def _atomic_write(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
