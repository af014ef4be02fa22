"""Graph checks for what IREE cannot run (fxsoftmax.quirks holds each behaviour and its decision): a
refusal names the case and what is accepted, before anything reaches IREE."""

from __future__ import annotations

from typing import Any

import torch

from .. import quirks


def refusal(ep: torch.export.ExportedProgram) -> str | None:
    """Why IREE cannot run this program, or None."""
    return quirks.refuse_dtypes(_signature_dtypes(ep)) or _refuse_cumsum(ep.graph_module)


def _signature_dtypes(ep: torch.export.ExportedProgram) -> set:
    """dtypes of the program's user inputs and outputs."""
    names = set(ep.graph_signature.user_inputs) | set(ep.graph_signature.user_outputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.name in names]
    return {v.dtype for v in vals if isinstance(v, torch.Tensor)}


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
            refused = quirks.refuse_cumsum(dynamic, truncates(x) or any(truncates(u) for u in node.users))
            if refused:
                return f"{node.name}: {refused}"
    return None
