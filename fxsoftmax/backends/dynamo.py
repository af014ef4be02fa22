"""The torch.compile backend "fxsoftmax": each graph dynamo hands over is exported, rewritten by the
softmax pass, compiled by IREE for the chosen device and run on the IREE runtime."""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from ..core.status import SiteStatus
from ..passes import SiteReport
from .artifact import Artifact
from .compiler import IreeCompileError
from .gaps import UnsupportedOpError, where
from .pipeline import Chooser, Options, build

log = logging.getLogger("fxsoftmax")

OPTIONS = {
    "policy": "preset or plan string (default 'auto')",
    "overrides": "{pattern: policy} or callable(site) -> policy|None",
    "device": "cpu | cuda | hip | vulkan (default cpu)",
    "arch": "target chip, e.g. sm_80, gfx942 (default per device)",
    "attention": "auto | keep | decompose (default auto: decompose on cpu, and on cuda for prefill; keep otherwise)",
    "fallback": "None | 'eager': run a graph IREE cannot compile in eager instead (default None)",
    "extra_flags": "extra iree-compile flags",
    "threads": "threads the `auto` policy assumes (default: all cores)",
}
FALLBACKS = (None, "eager")


@dataclass
class CompiledGraph:
    """One dynamo graph and what became of it."""

    name: str
    sites: list[SiteReport]
    artifact: Artifact | None  # None when it fell back to eager
    fallback_reason: str = ""
    specialized: str = ""  # why it is compiled per set of input shapes, when its dynamic form failed

    def __repr__(self) -> str:
        plans = sorted({s.plan for s in self.sites if s.status in (SiteStatus.REWRITTEN, SiteStatus.FUSED)})
        if self.artifact is None:
            where = f"eager ({self.fallback_reason.splitlines()[0][:80]})"
        else:
            where = f"IREE {self.artifact.target}" + (", per input shapes" if self.specialized else "")
        return f"CompiledGraph({self.name}: {len(self.sites)} softmax site(s), plans {plans or '-'}, runs on {where})"


class Backend:
    """A configured torch.compile backend; `graphs` lists every graph it compiled, in order."""

    def __init__(self, options: Options, chooser: Chooser | None = None, fallback: str | None = None):
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {fallback!r}; accepted: None, 'eager'")
        self.options, self.chooser, self.fallback = options, chooser, fallback
        self.graphs: list[CompiledGraph] = []

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        name = f"graph {len(self.graphs)}"
        wrapper, tensor_args, dynamic = _TensorOnly.wrap(gm, example_inputs)
        try:
            if dynamic is not None:
                try:
                    return self._compiled(name, wrapper, self._build(wrapper, tensor_args, dynamic, name), tensor_args)
                except Exception as e:  # a refusal, an importer gap or a compiler crash on the dynamic form
                    why = " ".join(str(e).split())[:200]
                    log.warning("fxsoftmax: %s is compiled for each new set of input shapes: its dynamic form failed: %s", name, why)
                    return self._compiled(name, wrapper, self._build(wrapper, tensor_args, None, name), tensor_args, specialized=why)
            return self._compiled(name, wrapper, self._build(wrapper, tensor_args, None, name), tensor_args)
        except IreeCompileError as e:
            if self.fallback != "eager":
                raise
            log.warning("fxsoftmax: %s runs in eager: %s", name, str(e).splitlines()[0])
            self._record(CompiledGraph(name, [], None, str(e)))
            return gm.forward

    def _build(self, wrapper: "_TensorOnly", tensors: list[torch.Tensor], dynamic: Any, name: str) -> Artifact:
        try:
            # export traces with its own fake mode; dynamo's tracing context must not see its guards
            with torch._guards.tracing(None):
                return build(wrapper, tensors, None, self.options, self.chooser, dynamic_shapes=dynamic, what=name)
        except UnsupportedOpError as e:
            raise UnsupportedOpError(f"{name} of the compiled model: {_model_lines(str(e), wrapper.gm)}", e.stderr) from None
        except IreeCompileError as e:
            raise IreeCompileError(f"{name} of the compiled model", e.stderr, e.returncode) from None

    def _compiled(self, name: str, wrapper: "_TensorOnly", art: Artifact, tensors: list[torch.Tensor], specialized: str = "") -> Callable:
        self._record(CompiledGraph(name, art.sites, art, specialized=specialized))
        first = _Runner(art, wrapper.scalars)
        if not specialized:
            return first
        return _PerShape(first, tensors, lambda new: _Runner(self._build(wrapper, new, None, name), wrapper.scalars))

    def _record(self, graph: CompiledGraph) -> None:
        self.graphs.append(graph)
        COMPILED_GRAPHS.append(graph)


def make_backend(chooser_for: Callable[[Options], Chooser | None], **options: Any) -> Backend:
    """A Backend from torch.compile-style options (validated: unknown keys or values raise a ValueError
    listing what is accepted); `chooser_for(options)` resolves `auto`."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        accepted = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise ValueError(f"unknown fxsoftmax option(s) {unknown}; accepted: {accepted}")
    fallback = options.pop("fallback", None)
    opts = Options(**options)
    return Backend(opts, chooser_for(opts), fallback)


# Every graph compiled in this process by the "fxsoftmax" backend (the string form has no object to ask).
COMPILED_GRAPHS: list[CompiledGraph] = []


class _TensorOnly(torch.nn.Module):
    """Dynamo's graph, called with tensors only: its SymInt inputs are recomputed from tensor sizes."""

    def __init__(self, gm: fx.GraphModule, sources: list[tuple[str, int, int]], scalars: dict[int, float]):
        super().__init__()
        self.gm, self.sources, self.scalars = gm, sources, scalars

    @classmethod
    def wrap(cls, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> tuple["_TensorOnly", list[torch.Tensor], Any]:
        """The wrapper, its example tensors, and export dynamic_shapes keeping dynamo's symbolic dims dynamic."""
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        vals = [n.meta.get("example_value", n.meta.get("val")) for n in placeholders]
        tensor_idx = [i for i, a in enumerate(example_inputs) if isinstance(a, torch.Tensor) and not _is_unspecialized_float(a)]
        sources: list[tuple[str, int, int]] = []
        for i, a in enumerate(example_inputs):
            if _is_unspecialized_float(a):
                sources.append(("scalar", i, -1))
                continue
            if isinstance(a, torch.Tensor):
                sources.append(("tensor", tensor_idx.index(i), -1))
                continue
            if not isinstance(vals[i], torch.SymInt):
                raise ValueError(f"graph input {placeholders[i].name} is a {type(a).__name__}; fxsoftmax accepts tensors and sizes")
            sources.append(("size", *_find_size(vals[i], [vals[j] for j in tensor_idx], placeholders[i].name)))
        specs = [
            {d: torch.export.Dim.AUTO for d, s in enumerate(getattr(vals[j], "shape", ())) if isinstance(s, torch.SymInt)} or None
            for j in tensor_idx
        ]
        dynamic = (tuple(specs),) if any(specs) else None  # one entry: forward takes *tensors
        scalars = {i: float(example_inputs[i]) for kind, i, _ in sources if kind == "scalar"}
        return cls(gm, sources, scalars), [example_inputs[j] for j in tensor_idx], dynamic

    def forward(self, *tensors: torch.Tensor):
        args = [
            tensors[t] if kind == "tensor" else torch.tensor(self.scalars[t], dtype=torch.float64) if kind == "scalar" else tensors[t].shape[d]
            for kind, t, d in self.sources
        ]
        return self.gm(*args)


def _model_lines(message: str, gm: fx.GraphModule) -> str:
    """`message` with each place in dynamo's graph code ("at <eval_with_key>.N:L: name = ...") replaced by
    the model line that node came from."""
    nodes = {n.name: n for n in gm.graph.nodes}

    def model_line(m: re.Match) -> str:
        node = nodes.get(m.group(1))
        return where(node) if node is not None and where(node) else m.group(0)

    return re.sub(r" \(at <eval_with_key>\.\d+:\d+: (\w+) = [^\n]*?\)(?=[:,]| and |$)", model_line, message)


def _is_unspecialized_float(a: Any) -> bool:
    # dynamo passes a Python float it did not specialize on (a model's eps, a scaling factor) as a 0-d
    # float64 tensor; IREE cannot take f64, so its value is compiled in and checked on every call
    return isinstance(a, torch.Tensor) and a.dim() == 0 and a.dtype == torch.float64


def _find_size(sym: torch.SymInt, tensors: list, name: str) -> tuple[int, int]:
    for t, v in enumerate(tensors):
        for d, s in enumerate(getattr(v, "shape", ())):
            if isinstance(s, torch.SymInt) and s.node.expr == sym.node.expr:
                return t, d
    raise ValueError(f"graph input {name} ({sym}) is not the size of any tensor input; fxsoftmax accepts sizes of tensor inputs only")


class _Runner:
    """What dynamo calls: flat tensors in, the graph's outputs out; parameters stay on the device."""

    def __init__(self, art: Artifact, scalars: dict[int, float]):
        self.art, self.runner, self.scalars = art, art.runner(), scalars
        self.cache: dict[int, tuple[Any, int, Any]] = {}

    def _put(self, i: int, t: torch.Tensor):
        if i in self.runner.written or not isinstance(t, torch.nn.Parameter):
            return self.runner.put_arg(i, t)
        hit = self.cache.get(id(t))
        if hit is not None and hit[1] == t._version and hit[2]() is t:
            return hit[0]
        bv = self.runner.put(t)
        self.cache[id(t)] = (bv, t._version, weakref.ref(t))
        return bv

    def __call__(self, *args: Any):
        for i, value in self.scalars.items():
            if float(args[i]) != value:
                raise ValueError(f"graph input {i} is {float(args[i])}, but the IREE module was compiled with {value}; "
                                 "compile the model again (e.g. torch._dynamo.reset()) for the new value")
        tensors = _tensor_args(args, self.scalars)
        results = self.art.signature.results_for(tensors) if self.art.signature is not None else None
        outs = self.runner.call([self._put(i, t) for i, t in enumerate(tensors)], results=results)
        return pytree.tree_unflatten(outs, self.art.out_spec)


class _PerShape:
    """A graph whose dynamic form IREE could not take: one static module per set of input shapes, built on first sight."""

    def __init__(self, first: _Runner, tensors: list[torch.Tensor], build_for: Callable[[list[torch.Tensor]], _Runner]):
        self.build_for, self.scalars = build_for, first.scalars
        self.runners = {_shapes(tensors): first}

    def __call__(self, *args: Any):
        tensors = _tensor_args(args, self.scalars)
        key = _shapes(tensors)
        if key not in self.runners:
            self.runners[key] = self.build_for(tensors)
        return self.runners[key](*args)


def _shapes(tensors: Sequence[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape), t.dtype) for t in tensors)


def _tensor_args(args: Sequence[Any], scalars: dict[int, float]) -> list[torch.Tensor]:
    return [a for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i not in scalars]
