"""Running iree-compile on MLIR text, with IREE's diagnostics turned into clear errors."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Sequence

from iree.compiler.tools.binaries import find_tool


class IreeCompileError(RuntimeError):
    """iree-compile rejected a module; the message starts with IREE's first diagnostic lines."""

    def __init__(self, what: str, stderr: str):
        self.stderr = stderr
        lines = [l for l in stderr.splitlines() if l.strip()]
        first = [l for l in lines if "error" in l.lower()][:3] or lines[:3]
        super().__init__(f"IREE could not compile {what}:\n  " + "\n  ".join(first))


def iree_compile(mlir: str, flags: Sequence[str], *, what: str = "the module") -> tuple[bytes, str]:
    """Compile MLIR text with `flags`; return (output bytes, stderr)."""
    with tempfile.TemporaryDirectory(prefix="fxsoftmax-") as tmp:
        src, out = os.path.join(tmp, "in.mlir"), os.path.join(tmp, "out")
        with open(src, "w") as f:
            f.write(mlir)
        proc = subprocess.run(
            [find_tool("iree-compile"), src, "-o", out, *flags], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise IreeCompileError(what, proc.stderr)
        with open(out, "rb") as f:
            return f.read(), proc.stderr
