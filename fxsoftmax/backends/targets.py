"""IREE targets: the devices fxsoftmax compiles for, their default chips, the runtime driver of each, and the
host CPU that the chip `host` names."""

from __future__ import annotations

import functools
from dataclasses import dataclass

DEVICES = ("cpu", "cuda", "hip", "vulkan")
# vulkan: IREE's generic profile, which runs on any Vulkan 1.1 device incl. Mesa's llvmpipe; pass a chip
# (rdna3, ampere, valhall, ...) for a real GPU.
DEFAULT_ARCH = {"cpu": "host", "cuda": "sm_80", "hip": "gfx942", "vulkan": "vp_android_baseline_2022"}
_DRIVERS = {"cpu": "local-task", "cuda": "cuda", "hip": "hip", "vulkan": "vulkan"}
HOST_DRIVERS = ("local-task", "local-sync")  # drivers whose buffers are host memory


@dataclass(frozen=True)
class Target:
    """A compile target (device kind + chip) and the IREE runtime driver that executes it."""

    device: str = "cpu"
    arch: str | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; accepted: {', '.join(DEVICES)}")
        if self.arch is not None and not (isinstance(self.arch, str) and self.arch.strip()):
            raise ValueError(f"arch must be a non-empty string such as {DEFAULT_ARCH[self.device]!r}, got {self.arch!r}")

    @property
    def chip(self) -> str:
        return self.arch or DEFAULT_ARCH[self.device]

    @property
    def kind(self) -> str:
        return "cpu" if self.device == "cpu" else "gpu"

    @property
    def driver(self) -> str:
        return _DRIVERS[self.device]

    def __str__(self) -> str:
        return f"{self.device}:{self.chip}"


@functools.lru_cache(maxsize=None)
def _cpuinfo_fields() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in first.splitlines())}


def host_cpu_model() -> str:
    return _cpuinfo_fields().get("model name", "?")


def host_cpu_flags() -> set[str]:
    """The host CPU's ISA flags (avx512f, avx512_bf16, ...)."""
    return set(_cpuinfo_fields().get("flags", "").split())
