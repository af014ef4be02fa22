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
    from .compiler import IreeCompileError, iree_compile

    key = str(target)
    if key not in _ACCEPTS:
        try:
            iree_compile(_PROBE, target.compile_flags(), what=f"a probe for {target}")
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
