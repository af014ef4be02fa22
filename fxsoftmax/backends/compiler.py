"""Running iree-compile on MLIR text, with IREE's diagnostics turned into clear errors; a cache of compiles
(in the process, and on disk in $FXSOFTMAX_COMPILE_CACHE when set); and which chips this IREE accepts."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from iree.compiler.tools.binaries import find_tool

from . import flags
from .targets import Target, host_cpu_flags, host_cpu_model

_CRASH_MARKS = ("include the crash backtrace", "PLEASE submit a bug report", "Stack dump:")  # IREE's and LLVM's crash handlers


class IreeCompileError(RuntimeError):
    """iree-compile rejected a module, or crashed; the message starts with IREE's first diagnostic lines."""

    def __init__(self, what: str, stderr: str, returncode: int = 1, mlir: str = "", compile_flags: Sequence[str] = ()):
        self.stderr, self.returncode, self.mlir, self.compile_flags = stderr, returncode, mlir, list(compile_flags)
        lines = [l for l in stderr.splitlines() if l.strip()]
        first = [l for l in lines if "error" in l.lower()][:3] or lines[:3]
        how = f"crashed (signal {self.signal})" if self.signal else "crashed" if self.crashed else "could not compile"
        super().__init__(f"IREE {how} {what}:\n  " + "\n  ".join(first))

    @functools.cached_property
    def import_failure(self) -> str | None:
        """iree-compile's diagnostics for the module stopped once imported (lowering its torch ops), with the IR
        it held when it failed: None when that compiles, so the failure is in code generation for the device."""
        if not self.mlir:
            return self.stderr
        try:
            iree_compile(self.mlir, [*self.compile_flags, *flags.input_level(), *flags.IR_AFTER_FAILURE], what="the module to the input level")
        except IreeCompileError as e:
            return e.stderr
        return None

    @property
    def in_import(self) -> bool:
        return self.import_failure is not None

    @property
    def signal(self) -> int | None:
        """The signal that ended iree-compile: from its return code, or from a shell's 128 + signal when
        $IREE_TOOL_PATH names a wrapper script."""
        if self.returncode < 0:
            return -self.returncode
        return self.returncode - 128 if self.returncode > 128 else None

    @property
    def crashed(self) -> bool:
        """iree-compile died (a signal, or IREE's or LLVM's crash handler), rather than refusing the module."""
        return self.signal is not None or any(mark in self.stderr for mark in _CRASH_MARKS)


@dataclass
class CompileResult:
    output: bytes
    stderr: str
    phases: dict[str, str] = field(default_factory=dict)  # phase name (e.g. "flow") -> IR text


def iree_compile(mlir: str, compile_flags: Sequence[str], *, what: str = "the module", phases: Sequence[str] = ()) -> CompileResult:
    """Compile MLIR text with `compile_flags`; keep the IR IREE had at the end of each phase in `phases`."""
    with tempfile.TemporaryDirectory(prefix="fxsoftmax-") as tmp:
        src, out, dump = os.path.join(tmp, "in.mlir"), os.path.join(tmp, "out"), os.path.join(tmp, "phases")
        with open(src, "w") as f:
            f.write(mlir)
        extra = flags.phase_dump(dump) if phases else []
        proc = subprocess.run([find_tool("iree-compile"), src, "-o", out, *compile_flags, *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            raise IreeCompileError(what, proc.stderr, proc.returncode, mlir, compile_flags)
        with open(out, "rb") as f:
            result = CompileResult(f.read(), proc.stderr)
        for name in os.listdir(dump) if phases else ():
            phase = name.split(".")[-2]  # module.6.flow.mlir
            if phase in phases:
                with open(os.path.join(dump, name)) as f:
                    result.phases[phase] = f.read()
        return result


_COMPILED: OrderedDict[str, CompileResult] = OrderedDict()
COMPILE_CACHE_ENTRIES = 32  # the most recent compiles kept in this process
DISK_CACHE_ENV = "FXSOFTMAX_COMPILE_CACHE"  # a folder: compiles kept across processes (none when unset)


def compile_cached(mlir: str, compile_flags: Sequence[str], *, what: str, phases: Sequence[str] = ()) -> CompileResult:
    """iree-compile, memoized on (this iree-compile and host, MLIR text, flags, phases kept): in this process,
    least recently used entries beyond COMPILE_CACHE_ENTRIES dropped, and in $FXSOFTMAX_COMPILE_CACHE."""
    key = hashlib.sha256("\0".join([_compiler_identity(), mlir, *compile_flags, "|", *phases]).encode()).hexdigest()
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    folder = os.environ.get(DISK_CACHE_ENV)
    result = _read_entry(folder, key) if folder else None
    if result is None:
        result = iree_compile(mlir, compile_flags, what=what, phases=phases)
        if folder:
            _write_entry(folder, key, result)
    _COMPILED[key] = result
    while len(_COMPILED) > COMPILE_CACHE_ENTRIES:
        _COMPILED.popitem(last=False)
    return result


@functools.lru_cache(maxsize=None)
def _compiler_identity() -> str:
    """What else decides iree-compile's output: the binary itself, and the CPU that `host` names."""
    tool = find_tool("iree-compile")
    st = os.stat(tool)
    return f"{tool}:{st.st_size}:{st.st_mtime_ns}:{platform.machine()}:{host_cpu_model()}:{sorted(host_cpu_flags())}"


def _read_entry(folder: str, key: str) -> CompileResult | None:
    """The entry stored under `key`, or None when there is none or it is incomplete."""
    try:
        with open(os.path.join(folder, key + ".json")) as f:
            meta = json.load(f)
        with open(os.path.join(folder, key + ".out"), "rb") as f:
            output = f.read()
    except (OSError, ValueError):
        return None
    if hashlib.sha256(output).hexdigest() != meta.get("output_sha256"):
        return None
    return CompileResult(output, meta["stderr"], meta["phases"])


def _write_entry(folder: str, key: str, result: CompileResult) -> None:
    """Store `result` under `key`; each file appears whole (written aside, then renamed), the output first."""
    meta = {"output_sha256": hashlib.sha256(result.output).hexdigest(), "stderr": result.stderr, "phases": result.phases}
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        for name, data in ((key + ".out", result.output), (key + ".json", json.dumps(meta).encode())):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(folder, name))
    except OSError as e:  # a cache that cannot be written costs a compile later, not this export
        warnings.warn(f"{DISK_CACHE_ENV}: could not store a compile in {folder}: {e}", stacklevel=3)
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


# Chips worth trying when an arch is refused, to tell the user which ones this IREE accepts.
_CANDIDATE_CHIPS = {
    "cuda": ("sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_120"),
    "hip": ("gfx908", "gfx90a", "gfx942", "gfx950", "gfx1030", "gfx1100", "gfx1101", "gfx1200", "gfx1201"),
    "vulkan": ("vp_android_baseline_2022", "rdna3", "rdna2", "ampere", "valhall", "adreno"),
}
_PROBE = """func.func @probe(%a: tensor<64xf32>) -> tensor<64xf32> {
  %0 = math.exp %a : tensor<64xf32>
  return %0 : tensor<64xf32>
}"""
_ACCEPTS: dict[str, bool] = {}


def _accepts(target: Target) -> bool:
    key = str(target)
    if key not in _ACCEPTS:
        try:
            iree_compile(_PROBE, flags.target_flags(target), what=f"a probe for {target}")
            _ACCEPTS[key] = True
        except IreeCompileError:
            _ACCEPTS[key] = False
    return _ACCEPTS[key]


def check_target(target: Target) -> None:
    """Raise a ValueError naming the chips this IREE accepts if it cannot compile for `target`'s chip
    (e.g. IREE 3.9 has no sm_89 or sm_90: compile for sm_80, whose PTX the driver JIT-compiles on newer
    GPUs). Measured by compiling a one-op probe, once per process and target."""
    if target.device == "cpu" or _accepts(target):
        return
    accepted = [c for c in _CANDIDATE_CHIPS[target.device] if _accepts(Target(target.device, c))]
    hint = " (IREE has no target for this GPU yet: compile for sm_80, whose PTX the CUDA driver JIT-compiles on newer GPUs)" if target.device == "cuda" else ""
    raise ValueError(
        f"this IREE cannot compile for {target.device} arch {target.chip!r}{hint}; accepted: {', '.join(accepted) or 'none found'}"
    )
