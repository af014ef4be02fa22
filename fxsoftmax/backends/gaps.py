"""Ops IREE's importer cannot lower. The rule: when iree-compile names an op it failed to legalize (or
fails at an op's source line), export again with PyTorch's own decomposition of that op; the process
remembers it. An op with no decomposition fails with an UnsupportedOpError naming it."""

from __future__ import annotations

import re

import torch

from .compiler import IreeCompileError

# Ops IREE 3.9's importer cannot lower, found by the rule, decomposed up front so that the common Hugging
# Face mask code does not cost a failed compile first.
KNOWN = (torch.ops.aten.__and__.Tensor, torch.ops.aten.__or__.Tensor)
LEARNED: set = set()  # found by the rule during this process
_NOT_LEGALIZED = re.compile(r"""(?:name = "|failed to legalize operation ')torch\.(aten\.\w+)""")
# a failure at a model line (a source file, or dynamo's <eval_with_key>.N); it counts only if it is in the
# import (IreeCompileError.in_import), not in code generation for the device
_LOCATED_ERROR = re.compile(r"^(\S+):(\d+):\d+: error:", re.MULTILINE)


class UnsupportedOpError(IreeCompileError):
    """The model holds an op that neither IREE's importer nor PyTorch's decompositions can lower."""

    def __init__(self, message: str, stderr: str):
        self.stderr, self.returncode = stderr, 1
        RuntimeError.__init__(self, message)


def decompositions(ops) -> dict:
    """PyTorch's decompositions of `ops` and of the known gaps."""
    defaults = torch.export.default_decompositions()
    return {op: defaults[op] for op in (*KNOWN, *ops)}


def importer_gaps(error: IreeCompileError, ep: torch.export.ExportedProgram) -> set:
    """Ops of `ep` IREE could not import that PyTorch can decompose: those named as not legalized, and
    those at the source line of an import error. Raises an UnsupportedOpError naming a not-legalized op
    that PyTorch cannot decompose."""
    defaults = torch.export.default_decompositions()
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    found, stuck = set(), []
    for name in sorted(set(_NOT_LEGALIZED.findall(error.stderr))):
        usable = {n.target for n in nodes if str(n.target).rsplit(".", 1)[0] == name and n.target in defaults}
        found |= usable
        if not usable:
            stuck.append(name)
    if stuck and error.in_import:
        raise UnsupportedOpError(
            f"IREE's importer cannot lower {', '.join(stuck)} and PyTorch has no decomposition for it; "
            "accepted: models whose ops IREE lowers or PyTorch decomposes",
            error.stderr,
        ) from error
    located = _LOCATED_ERROR.findall(error.stderr)
    for path, line in located if located and error.in_import else ():
        frame = f'File "{path}", line {line},'
        found |= {n.target for n in nodes if n.target in defaults and frame in _innermost_frame(n)}
    return found


def _innermost_frame(node: torch.fx.Node) -> str:
    frames = [l for l in (node.meta.get("stack_trace") or "").splitlines() if l.strip().startswith("File ")]
    return frames[-1] if frames else ""
