"""Ops IREE's importer cannot lower. The rule: when iree-compile names an op it failed to legalize, fails at an
op's source line, or fails on a constant or torch.operator that an op it could not lower uses, export again
with fxsoftmax's own rewrite of that op (fxsoftmax.backends.rewrites) or PyTorch's decomposition of it; the
process remembers it. An op with neither fails with an UnsupportedOpError naming it and its model line."""

from __future__ import annotations

import re

import torch

from . import rewrites
from .compiler import IreeCompileError

# Ops IREE 3.9's importer cannot lower, found by the rule, decomposed up front so that the common Hugging
# Face mask code does not cost a failed compile first.
KNOWN = (torch.ops.aten.__and__.Tensor, torch.ops.aten.__or__.Tensor)
LEARNED: set = set()  # found by the rule during this process
_NOT_LEGALIZED = re.compile(r"""(?:name = "|failed to legalize operation ')torch\.(?!constant\.|prim\.)(\w+\.\w+)""")
# a constant failing to legalize: the op IREE could not lower is one that uses it, in the IR IREE held then
_FAILED_CONSTANT = re.compile(r'see current operation: %\S+ = "(torch\.constant\.\w+)"\(\)(?: <\{value = (.*?)(?: : \w+)?\}>)?')
# a failure at a model line (a source file, or dynamo's <eval_with_key>.N); it counts only if it is in the
# import (IreeCompileError.in_import), not in code generation for the device
_LOCATED_ERROR = re.compile(r"^(\S+):(\d+):\d+: error:", re.MULTILINE)
TRIED = "neither fxsoftmax's own rewrites (fxsoftmax/backends/rewrites.py) nor PyTorch's decompositions lower it"


class UnsupportedOpError(IreeCompileError):
    """The model holds an op that neither IREE's importer nor PyTorch's decompositions can lower."""

    def __init__(self, message: str, stderr: str):
        self.stderr, self.returncode = stderr, 1
        RuntimeError.__init__(self, message)


def decompositions(ops) -> dict:
    """PyTorch's decompositions of `ops` and of the known gaps, and fxsoftmax's own rewrites."""
    defaults = torch.export.default_decompositions()
    return {**{op: defaults[op] for op in (*KNOWN, *ops)}, **rewrites.decompositions()}


def importer_gaps(error: IreeCompileError, ep: torch.export.ExportedProgram) -> set:
    """Ops of `ep` IREE could not import that PyTorch can decompose: those named as not legalized, those
    a failed conversion left behind a constant or torch.operator it could not legalize, and those at the
    source line of an import error. Raises an UnsupportedOpError naming an op IREE could not import that
    nothing lowers, with its model line."""
    defaults = torch.export.default_decompositions()
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    names = set(_NOT_LEGALIZED.findall(error.stderr))
    failed_constants = set(_FAILED_CONSTANT.findall(error.stderr))
    if failed_constants and error.in_import:
        names |= _users_of(failed_constants, error.import_failure)
    found, stuck = set(), []
    for name in sorted(names):
        ops = [n for n in nodes if str(n.target).rsplit(".", 1)[0] == name]
        usable = {n.target for n in ops if n.target in defaults}
        found |= usable
        if not usable:
            stuck.append(f"{name}{where(*ops)}")
    if stuck and error.in_import:
        raise UnsupportedOpError(f"IREE's importer cannot lower {', '.join(stuck)}, and {TRIED}; "
                                 "accepted: models whose ops IREE lowers, fxsoftmax rewrites or PyTorch decomposes", error.stderr) from error
    located = _LOCATED_ERROR.findall(error.stderr) if not names and error.in_import else []
    for path, line in located:
        frame = f'File "{path}", line {line},'
        there = [n for n in nodes if frame in _innermost_frame(n)[0]]
        found |= {n.target for n in there if n.target in defaults}
        if there and not found:
            ops = ", ".join(sorted({str(n.target).rsplit(".", 1)[0] for n in there}))
            first = next(l for l in error.stderr.splitlines() if ": error:" in l).split(": error:", 1)[1].strip()
            raise UnsupportedOpError(f"IREE's importer failed on {ops}{where(*there)}: {first}; and {TRIED}; "
                                     "accepted: models whose ops IREE lowers, fxsoftmax rewrites or PyTorch decomposes", error.stderr) from error
    return found


def _users_of(constants: set[tuple[str, str]], ir: str) -> set[str]:
    """The torch ops in `ir` that take one of `constants` ((op, value) as IREE printed them) as an operand."""
    names = set()
    for op, value in constants:
        defined = re.findall(rf"^\s*(%[\w-]+) = {re.escape(op)}\b *{re.escape(value)}(?: : \w+)?$", ir, re.MULTILINE)
        for ssa in set(defined):
            names |= set(re.findall(rf"= torch\.(aten\.\w+)(?:\.\w+)? [^\n]*{re.escape(ssa)}\b", ir))
    return names


def _innermost_frame(node: torch.fx.Node) -> tuple[str, str]:
    """The last `File "...", line N` line of the node's stack trace and the code line under it ("" when none)."""
    lines = (node.meta.get("stack_trace") or "").splitlines()
    frames = [i for i, l in enumerate(lines) if l.strip().startswith("File ")]
    if not frames:
        return "", ""
    i = frames[-1]
    return lines[i], lines[i + 1].strip() if i + 1 < len(lines) else ""


def where(*nodes: torch.fx.Node) -> str:
    """' (at <file>:<line>: <code>)' for the first node with a source line, else ''."""
    for node in nodes:
        frame, code = _innermost_frame(node)
        m = re.match(r'\s*File "([^"]+)", line (\d+)', frame)
        if m:
            path = m.group(1).split("site-packages/")[-1]
            return f" (at {path}:{m.group(2)}: {code})" if code else f" (at {path}:{m.group(2)})"
    return ""
