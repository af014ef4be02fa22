"""Every iree-compile and IREE runtime flag fxsoftmax passes, built here: the target's, the ones this
IREE's quirks call for (fxsoftmax.quirks says why), and those for inspection and benchmarks."""

from __future__ import annotations

from typing import Iterable, Sequence

from .. import quirks
from .targets import Target

# Printing flags for dumped IR: locations inline, so every op names the softmax step it came from.
DEBUG_PRINT = ("--mlir-print-debuginfo", "--mlir-print-local-scope")
# The pass before which IREE checks a CPU dispatch's stack; its input IR holds every stack allocation.
STACK_CHECK_PASS = "iree-llvmcpu-check-ir-before-llvm-conversion"


def target_flags(target: Target) -> list[str]:
    """What selects the device and chip."""
    chip = target.chip
    return {
        "cpu": ["--iree-hal-target-backends=llvm-cpu", f"--iree-llvmcpu-target-cpu={chip}"],
        # --iree-hal-target-device=cuda fails with "missing GPU target" in IREE 3.9.
        "cuda": ["--iree-hal-target-backends=cuda", f"--iree-cuda-target={chip}"],
        "hip": ["--iree-hal-target-device=hip", quirks.hip_chip_flag(chip)],
        "vulkan": ["--iree-hal-target-device=vulkan", f"--iree-vulkan-target={chip}"],
    }[target.device]


def module_flags(target: Target, site_statuses: Iterable[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """The flags a model's module is compiled with: the target's, this IREE's quirks for a module holding
    sites of these statuses, and the user's `extra`."""
    cpu = quirks.cpu_module_flags(site_statuses) if target.device == "cpu" else []
    return [*target_flags(target), *cpu, *external_transients(target), *extra]


def external_transients(target: Target) -> list[str]:
    """The caller provides the module's transient memory (quirks.RUNTIME_CACHES_BUFFERS_UNTIL)."""
    return [quirks.EXTERNAL_TRANSIENTS_FLAG] if target.device == "cpu" and quirks.needs_external_transients() else []


def phase_dump(folder: str) -> list[str]:
    """Dump the IR at the end of each compilation phase into `folder`, with locations."""
    return [f"--dump-compilation-phases-to={folder}", *DEBUG_PRINT]


IR_AFTER_FAILURE = ["--mlir-print-ir-after-failure"]  # what a failing pass left: the ops it could not lower


def input_level() -> list[str]:
    """Stop once the program is imported (the torch ops lowered): where importer failures show."""
    return ["--compile-to=input"]


def flow_level() -> list[str]:
    """Stop once dispatches are formed, with locations (what the report reads)."""
    return ["--compile-to=flow", *DEBUG_PRINT]


def stack_dump() -> list[str]:
    """Compile the executables and print, to stderr, the IR IREE checks each CPU dispatch's stack on."""
    return ["--compile-to=executable-targets", f"--mlir-print-ir-before={STACK_CHECK_PASS}", "--mlir-disable-threading"]


def stack_limit(limit_bytes: int) -> list[str]:
    """Fail compilation of a CPU dispatch needing more stack than this (IREE's default is 32 KiB)."""
    return [f"--iree-llvmcpu-stack-allocation-limit={limit_bytes}"]


def benchmark_dump(folder: str) -> list[str]:
    """Write one standalone benchmark module per dispatch into `folder`."""
    return [f"--iree-hal-dump-executable-benchmarks-to={folder}"]


def local_task_workers(workers: int) -> list[str]:
    """Runtime: the local-task device's worker count (read when the driver makes its first device)."""
    return [f"--task_topology_group_count={workers}"]
