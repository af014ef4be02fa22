"""The compiled module for one model: call it like the model (optionally writing into `out=` tensors),
save it, load it on a device."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import sympy
import torch
from torch.utils import _pytree as pytree

from .. import quirks
from ..core.dtypes import torch_dtype
from ..passes import SiteReport
from .runtime import DeviceUnavailableError, IreeRunner, parameter_index
from .targets import Target
from .vulkan import SOFTWARE_VULKAN_ARCH


@dataclass(frozen=True)
class Signature:
    """Sizes of the module's tensor inputs and results (ints, or expressions over the inputs' symbolic
    sizes, as text) and the results' dtypes: what a call's results will be before it runs."""

    inputs: tuple[tuple[int | str, ...], ...]
    results: tuple[tuple[int | str, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, ep: torch.export.ExportedProgram) -> "Signature | None":
        sig = ep.graph_signature
        vals = {n.name: n.meta.get("val") for n in ep.graph.nodes}
        ins = [vals[n] for n in sig.user_inputs if isinstance(vals.get(n), torch.Tensor)]
        outs = [vals.get(getattr(n, "name", n)) for n in sig.user_outputs]
        if not all(isinstance(v, torch.Tensor) for v in outs):
            return None
        size = lambda d: d if isinstance(d, int) else str(d)  # noqa: E731
        return cls(tuple(tuple(map(size, v.shape)) for v in ins), tuple(tuple(map(size, v.shape)) for v in outs),
                   tuple(str(v.dtype).replace("torch.", "") for v in outs))

    def results_for(self, tensors: Sequence[torch.Tensor]) -> list[tuple[tuple[int, ...], torch.dtype]] | None:
        """Each result's shape and dtype for these inputs; None if a size is not determined by them."""
        known: dict[str, int] = {}
        for dims, t in zip(self.inputs, tensors):
            if len(dims) != t.dim():
                return None
            known.update({d: s for d, s in zip(dims, t.shape) if isinstance(d, str)})
        try:
            shapes = [tuple(d if isinstance(d, int) else int(sympy.sympify(d).subs(known)) for d in dims) for dims in self.results]
        except (TypeError, ValueError, sympy.SympifyError):  # a size the inputs do not determine
            return None
        return [(s, torch_dtype(d)) for s, d in zip(shapes, self.dtypes)]


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
    # parameters the module loads by name from scope "model" (an IREE parameter archive when saved):
    # tensors, or the path of a .irpa file; empty when the weights are inlined in the MLIR
    parameters: dict[str, torch.Tensor] | str = field(default_factory=dict, repr=False)
    signature: Signature | None = None
    attention: str = ""  # where scaled_dot_product_attention went, and why
    stored: list[bool] = field(default_factory=list)  # results the output-storage entry point writes in place
    written: list[int] = field(default_factory=list)  # tensor inputs IREE may write into: copied for each call
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
            runner = IreeRunner(self.vmfb, driver, parameters=self.parameters,
                                external_transients=quirks.EXTERNAL_TRANSIENTS_FLAG in self.flags, stored=self.stored,
                                written=self.written)
            if runner.opened.software_vulkan and self.target.chip != SOFTWARE_VULKAN_ARCH:
                raise DeviceUnavailableError(
                    f"the only Vulkan device is {runner.opened.description}; this module was compiled for "
                    f"{self.target.chip!r}, whose reductions give wrong results on it (subgroups of 8 lanes); "
                    f"compile with arch={SOFTWARE_VULKAN_ARCH!r} to run here"
                )
            self._runners[driver] = runner
        return self._runners[driver]

    def __call__(self, *args: Any, out: Any = None, **kwargs: Any) -> Any:
        """The model's outputs for these inputs. With `out` (a tensor, or the outputs' structure of tensors),
        the outputs are written into those tensors, as ATen's `out=` does, and `out` is returned."""
        flat, spec = pytree.tree_flatten((args, kwargs))
        if self.in_spec is not None and spec != self.in_spec:
            raise ValueError(f"inputs do not have the structure the module was exported with:\n got {spec}\n want {self.in_spec}")
        if self.constants is not None:
            given = [a for a in flat if not isinstance(a, torch.Tensor)]
            if given != self.constants:
                raise ValueError(f"non-tensor arguments {given} differ from the ones the module was exported with "
                                 f"{self.constants}; they are compiled into the module: export again with these values")
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        runner = self.runner()
        expected = self.signature.results_for(tensors) if self.signature is not None else None
        outs = self._check_out(out, expected, tensors, runner) if out is not None else ()
        results = runner(*tensors, out=outs, results=expected)
        return pytree.tree_unflatten(results, self.out_spec) if self.out_spec is not None else results

    def _check_out(self, out: Any, expected: list | None, tensors: list[torch.Tensor], runner: IreeRunner) -> list[torch.Tensor]:
        outs = pytree.tree_leaves(out)
        if expected is None:
            raise ValueError("out= needs the outputs' sizes before the call, and this module's depend on more than its inputs' sizes")
        want = ", ".join(f"{tuple(s)} {d}" for s, d in expected)
        if len(outs) != len(expected) or not all(isinstance(o, torch.Tensor) for o in outs):
            raise ValueError(f"out= must hold {len(expected)} tensor(s) ({want}), got {len(outs)} leaf(s)")
        for i, (o, (shape, dtype)) in enumerate(zip(outs, expected)):
            problem = (f"shape {tuple(o.shape)}" if tuple(o.shape) != tuple(shape) else f"dtype {o.dtype}" if o.dtype != dtype
                       else f"device {o.device}" if o.device.type != "cpu" else "a non-contiguous layout" if not o.is_contiguous()
                       else "an address not 64-byte aligned" if runner.out_function is not None and o.data_ptr() % 64
                       else "memory shared with an input" if any(_overlap(o, t) for t in tensors) else "")
            if problem:
                raise ValueError(f"out= tensor {i} has {problem}; expected a contiguous, 64-byte aligned cpu tensor of "
                                 f"shape {tuple(shape)} and dtype {dtype}, not sharing memory with an input")
        return outs

    def save(self, path: str | os.PathLike) -> None:
        """Write the VMFB (atomically: no half-written file on failure)."""
        atomic_write(path, self.vmfb)

    def save_mlir(self, path: str | os.PathLike) -> None:
        atomic_write(path, self.mlir.encode())

    def save_parameters(self, path: str | os.PathLike) -> None:
        """Write the externalized parameters as an IREE parameter archive (.irpa), atomically."""
        if not isinstance(self.parameters, dict) or not self.parameters:
            raise ValueError("this module has no externalized parameters (its weights are inlined in the MLIR)")
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".irpa")
        os.close(fd)
        try:
            parameter_index(self.parameters).create_archive_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder: no half-written file on failure."""
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
