"""Running iree-compile on MLIR text, with IREE's diagnostics turned into clear errors."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

from iree.compiler.tools.binaries import find_tool

# Printing flags for dumped IR: locations inline, so every op names the softmax step it came from.
DEBUG_PRINT_FLAGS = ("--mlir-print-debuginfo", "--mlir-print-local-scope")


class IreeCompileError(RuntimeError):
    """iree-compile rejected a module; the message starts with IREE's first diagnostic lines."""

    def __init__(self, what: str, stderr: str):
        self.stderr = stderr
        lines = [l for l in stderr.splitlines() if l.strip()]
        first = [l for l in lines if "error" in l.lower()][:3] or lines[:3]
        super().__init__(f"IREE could not compile {what}:\n  " + "\n  ".join(first))


@dataclass
class CompileResult:
    output: bytes
    stderr: str
    phases: dict[str, str] = field(default_factory=dict)  # phase name (e.g. "flow") -> IR text


def iree_compile(mlir: str, flags: Sequence[str], *, what: str = "the module", phases: Sequence[str] = ()) -> CompileResult:
    """Compile MLIR text with `flags`; keep the IR IREE had at the end of each phase in `phases`."""
    with tempfile.TemporaryDirectory(prefix="fxsoftmax-") as tmp:
        src, out, dump = os.path.join(tmp, "in.mlir"), os.path.join(tmp, "out"), os.path.join(tmp, "phases")
        with open(src, "w") as f:
            f.write(mlir)
        extra = [f"--dump-compilation-phases-to={dump}", *DEBUG_PRINT_FLAGS] if phases else []
        proc = subprocess.run([find_tool("iree-compile"), src, "-o", out, *flags, *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            raise IreeCompileError(what, proc.stderr)
        with open(out, "rb") as f:
            result = CompileResult(f.read(), proc.stderr)
        for name in os.listdir(dump) if phases else ():
            phase = name.split(".")[-2]  # module.6.flow.mlir
            if phase in phases:
                with open(os.path.join(dump, name)) as f:
                    result.phases[phase] = f.read()
        return result
