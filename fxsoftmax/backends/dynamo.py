"""The torch.compile backend "fxsoftmax": each graph dynamo hands over is exported, rewritten by the
softmax pass, compiled by IREE for the chosen device and run on the IREE runtime."""

from __future__ import annotations

import logging
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
from .gaps import UnsupportedOpError
from .pipeline import Chooser, Options, build

log = logging.getLogger("fxsoftmax")

OPTIONS = {
    "policy": "preset or plan string (default 'auto')",
    "overrides": "{pattern: policy} or callable(site) -> policy|None",
    "device": "cpu | cuda | hip | vulkan (default cpu)",
    "arch": "target chip, e.g. sm_80, gfx942 (default per device)",
    "attention": "auto | keep | decompose (default auto: decompose on cpu, keep on gpu)",
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

    def __repr__(self) -> str:
        plans = sorted({s.plan for s in self.sites if s.status in (SiteStatus.REWRITTEN, SiteStatus.FUSED)})
        where = f"IREE {self.artifact.target}" if self.artifact is not None else f"eager ({self.fallback_reason.splitlines()[0][:80]})"
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
            # export traces with its own fake mode; dynamo's tracing context must not see its guards
            with torch._guards.tracing(None):
                art = build(wrapper, tensor_args, None, self.options, self.chooser, dynamic_shapes=dynamic, what=name)
        except IreeCompileError as e:
            if self.fallback != "eager":
                if isinstance(e, UnsupportedOpError):
                    raise UnsupportedOpError(f"{name} of the compiled model: {e}", e.stderr) from None
                raise IreeCompileError(f"{name} of the compiled model", e.stderr, e.returncode) from None
            log.warning("fxsoftmax: %s runs in eager: %s", name, str(e).splitlines()[0])
            self._record(CompiledGraph(name, [], None, str(e)))
            return gm.forward
        self._record(CompiledGraph(name, art.sites, art))
        return _Runner(art, wrapper.scalars)

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

    def _put(self, t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter):
            return self.runner.put(t)
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
        tensors = [a for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i not in self.scalars]
        results = self.art.signature.results_for(tensors) if self.art.signature is not None else None
        outs = self.runner.call([self._put(t) for t in tensors], results=results)
        return pytree.tree_unflatten(outs, self.art.out_spec)
