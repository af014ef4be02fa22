"""Finding softmax sites: every form a torch.fx graph can hold, normalized to one description."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from ..core.dtypes import compute_dtype, dtype_name
from ..core.status import SiteStatus

aten = torch.ops.aten

# call_function targets: form name, and the positional index / keyword of (dim, dtype).
_TORCH_FUNCTIONS: dict[Any, str] = {
    torch.softmax: "torch.softmax",
    torch.nn.functional.softmax: "F.softmax",
    torch.special.softmax: "torch.special.softmax",
    torch.Tensor.softmax: "Tensor.softmax",
}
_ATEN_FORMS = {
    aten.softmax.int: "aten.softmax.int",
    aten._softmax.default: "aten._softmax",
    aten._safe_softmax.default: "aten._safe_softmax",
}


@dataclass
class SoftmaxSite:
    """One softmax in a graph, with its arguments normalized."""

    node: fx.Node
    form: str
    x: fx.Node
    dim: int | None  # non-negative, None if the rank is unknown
    x_dtype: torch.dtype | None  # dtype of the input as it arrives
    in_dtype: torch.dtype | None  # dtype softmax sees (differs from x_dtype when dtype= is given)
    out_dtype: torch.dtype | None
    safe: bool  # fully masked (-inf) rows give 0 instead of NaN
    shape: tuple | None
    module_path: str = ""
    skip_reason: str | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def compute_dtype(self) -> torch.dtype | None:
        return compute_dtype(self.in_dtype) if self.in_dtype is not None else None

    def dtype_names(self) -> set[str]:
        """x's, softmax's, the compute and the output dtype names."""
        return {dtype_name(d) for d in (self.x_dtype, self.in_dtype, self.compute_dtype, self.out_dtype) if d is not None}


@dataclass
class SiteReport:
    """What the pass did at one site (plain data, safe to keep after the graph changes)."""

    name: str
    module_path: str
    form: str
    shape: tuple | None
    dtype: str | None
    dim: int | None
    plan: str  # preset name or plan string
    plan_text: str  # the plan string ("fused" for fused)
    status: SiteStatus
    reason: str = ""
    groups: list[list[str]] = field(default_factory=list)  # steps per dispatch group, e.g. [["1","2"],["3","4"]]

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["status"] = str(self.status)
        return d


def fake_value(node: Any) -> torch.Tensor | None:
    """The (fake) tensor that tracing/export/FakeTensorProp recorded for `node`, if any."""
    if not isinstance(node, fx.Node):
        return None
    val = node.meta.get("val", node.meta.get("example_value"))
    return val if isinstance(val, torch.Tensor) else None


def tensor_info(node: Any) -> tuple[tuple | None, torch.dtype | None]:
    """Shape and dtype recorded on an FX node, if any."""
    if not isinstance(node, fx.Node):
        return None, None
    val = fake_value(node)
    if val is not None:
        return tuple(val.shape), val.dtype
    tm = node.meta.get("tensor_meta")
    if tm is not None and hasattr(tm, "dtype"):
        return tuple(tm.shape), tm.dtype
    return None, None


def module_path(node: fx.Node) -> str:
    """Qualified path of the innermost nn.Module that produced `node` ("" if unknown)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return _normalize_dynamo_path(str(path))


def _normalize_dynamo_path(path: str) -> str:
    # dynamo writes L['self'].encoder.layer[0] / L['self']._modules['x']; export writes encoder.layer.0
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']+)'\]", r".\1", path)
    return path.strip(".")


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def find_softmax_sites(gm: fx.GraphModule) -> list[SoftmaxSite]:
    """Every softmax in `gm`, in graph order (ATen forms, torch-level calls and nn.Softmax modules)."""
    sites = []
    for node in gm.graph.nodes:
        site = match_site(gm, node)
        if site is not None:
            sites.append(site)
    return sites


def match_site(gm: fx.GraphModule, node: fx.Node) -> SoftmaxSite | None:
    """The softmax at `node`, or None if `node` is not a softmax."""
    half_to_float, safe = False, False
    if node.op == "call_function" and node.target in _ATEN_FORMS:
        form = _ATEN_FORMS[node.target]
        x, dim = node.args[0], _arg(node, 1, "dim")
        if node.target is aten._softmax.default:
            dtype, half_to_float = None, bool(_arg(node, 2, "half_to_float", False))
        else:
            dtype = _arg(node, 2, "dtype")
        safe = node.target is aten._safe_softmax.default
    elif node.op == "call_function" and node.target in _TORCH_FUNCTIONS:
        form = _TORCH_FUNCTIONS[node.target]
        x = _arg(node, 0, "input", _arg(node, 0, "self"))
        dim = _arg(node, 1, "dim")
        dtype = _arg(node, 3 if form == "F.softmax" else 2, "dtype")
    elif node.op == "call_method" and node.target == "softmax":
        form = "Tensor.softmax"
        x, dim, dtype = node.args[0], _arg(node, 1, "dim"), _arg(node, 2, "dtype")
    elif node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, torch.nn.Softmax2d):
            form, dim = "nn.Softmax2d", -3
        elif isinstance(mod, torch.nn.Softmax):
            form, dim = "nn.Softmax", mod.dim
        else:
            return None
        x, dtype = node.args[0], None
    else:
        return None

    shape, x_dtype = tensor_info(x)
    in_dtype = dtype if dtype is not None else x_dtype  # softmax(x, dtype=d) casts x to d first
    out_dtype = torch.float32 if half_to_float else in_dtype
    site = SoftmaxSite(node, form, x, None, x_dtype, in_dtype, out_dtype, safe, shape, module_path(node))
    if not isinstance(x, fx.Node):
        site.skip_reason = "input is not a graph value"
    elif shape is None:
        site.skip_reason = "input shape/dtype unknown (trace with meta, or pass example_inputs)"
    elif not (x_dtype.is_floating_point and in_dtype.is_floating_point):
        site.skip_reason = f"non-float input ({x_dtype}) is left untouched"
    elif len(shape) == 0:
        site.skip_reason = "0-d input (softmax of a scalar is 1)"
    elif not isinstance(dim, (int, type(None))):
        site.skip_reason = f"dim {dim!r} is not an integer"
    else:
        if dim is None:
            dim = torch.nn.functional._get_softmax_dim("softmax", len(shape), 0)
        if not -len(shape) <= dim < len(shape):
            site.skip_reason = f"dim {dim} out of range for rank {len(shape)}"
        elif isinstance(shape[dim], int) and shape[dim] == 1:
            site.skip_reason = "softmax over a size-1 dim has no reduction to partition (left to IREE)"
        else:
            site.dim = dim % len(shape)
    return site
