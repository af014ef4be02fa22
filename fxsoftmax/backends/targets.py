"""IREE targets: what to pass iree-compile for a device, and which runtime driver runs it."""

from __future__ import annotations

from dataclasses import dataclass

DEVICES = ("cpu", "cuda", "hip", "vulkan")
# vulkan: IREE's generic profile, which runs on any Vulkan 1.1 device incl. Mesa's llvmpipe; pass a chip
# (rdna3, ampere, valhall, ...) for a real GPU.
DEFAULT_ARCH = {"cpu": "host", "cuda": "sm_80", "hip": "gfx942", "vulkan": "vp_android_baseline_2022"}
_DRIVERS = {"cpu": "local-task", "cuda": "cuda", "hip": "hip", "vulkan": "vulkan"}

# Lets IREE put a group's reductions and elementwise steps (e.g. max, exp, sum) into one dispatch;
# without it IREE splits a group holding two reductions. Used for every policy, `fused` included, so
# dispatch counts compare like for like.
COMMON_FLAGS = ("--iree-dispatch-creation-enable-aggressive-fusion",)
# IREE 3.9's default (masking) vectorization pads a max reduction whose length is not a multiple of the
# vector width with 0, so a row of 33 negative numbers has max 0 and softmax breaks once the row lies
# below ~-87 (exp underflows). Peeling the remainder computes it right, and is as fast or faster.
CPU_FLAGS = ("--iree-llvmcpu-vector-pproc-strategy=peel",)


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

    def compile_flags(self) -> list[str]:
        chip = self.chip
        per_device = {
            "cpu": ["--iree-hal-target-backends=llvm-cpu", f"--iree-llvmcpu-target-cpu={chip}", *CPU_FLAGS],
            # --iree-hal-target-device=cuda fails with "missing GPU target" in IREE 3.9.
            "cuda": ["--iree-hal-target-backends=cuda", f"--iree-cuda-target={chip}"],
            "hip": ["--iree-hal-target-device=hip", f"--iree-hip-target={chip}"],
            "vulkan": ["--iree-hal-target-device=vulkan", f"--iree-vulkan-target={chip}"],
        }[self.device]
        return per_device + list(COMMON_FLAGS)

    def __str__(self) -> str:
        return f"{self.device}:{self.chip}"
