"""IREE targets: what to pass iree-compile for a device, and which runtime driver runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .. import quirks

DEVICES = ("cpu", "cuda", "hip", "vulkan")
# vulkan: IREE's generic profile, which runs on any Vulkan 1.1 device incl. Mesa's llvmpipe; pass a chip
# (rdna3, ampere, valhall, ...) for a real GPU.
DEFAULT_ARCH = {"cpu": "host", "cuda": "sm_80", "hip": "gfx942", "vulkan": "vp_android_baseline_2022"}
_DRIVERS = {"cpu": "local-task", "cuda": "cuda", "hip": "hip", "vulkan": "vulkan"}

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

    def compile_flags(self, site_statuses: Iterable[str] = ()) -> list[str]:
        """iree-compile flags for this target and a module holding sites of these statuses."""
        chip = self.chip
        per_device = {
            "cpu": ["--iree-hal-target-backends=llvm-cpu", f"--iree-llvmcpu-target-cpu={chip}"],
            # --iree-hal-target-device=cuda fails with "missing GPU target" in IREE 3.9.
            "cuda": ["--iree-hal-target-backends=cuda", f"--iree-cuda-target={chip}"],
            "hip": ["--iree-hal-target-device=hip", f"--iree-hip-target={chip}"],
            "vulkan": ["--iree-hal-target-device=vulkan", f"--iree-vulkan-target={chip}"],
        }[self.device]
        return per_device + (quirks.cpu_module_flags(site_statuses) if self.device == "cpu" else [])

    def __str__(self) -> str:
        return f"{self.device}:{self.chip}"
