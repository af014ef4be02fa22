"""The `auto` policy: pick each site's plan from device kind, shape, dtype and thread count.

CPU: a calibration made by `fxsoftmax bench --calibrate` holds, per measured case (rows x row length,
last or other dim, dtype, threads), the median time of every preset. A site takes the best preset of the
nearest calibrated case (log-distance over rows and row length, same thread count if calibrated, else
the nearest). The calibration shipped with the package was made on the machine this was developed on;
`--calibrate` writes one for this machine, which `auto` then prefers.

GPU: nobody has calibrated on a GPU yet, so a rule from the founding discussion (IREE #17469): a GPU
recomputes exp rather than store it, and one kernel beats several ("the cost of the additional kernel
often outweighs the cost of computing the elementwise part twice"): `fused`, IREE's one-dispatch remat.
For reductions over a non-innermost dim `remat` instead, whose dispatches compute correctly on every
Vulkan device measured here (see README), where IREE's fused softmax does not.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from .policy import Plan, parse_policy

PACKAGED = os.path.join(os.path.dirname(__file__), "data", "calibration_cpu.json")
USER = os.environ.get("FXSOFTMAX_CALIBRATION") or os.path.join(
    os.path.expanduser("~"), ".cache", "fxsoftmax", "calibration_cpu.json"
)
# Plans `auto` may pick on CPU: each compiles under a 4 KiB stack for the largest shapes measured
# (tests/test_iree_cpu.py), so `auto` never exceeds IREE's stack limit. `fused` joins only where the
# calibration measured its stack within the limit.
CPU_CANDIDATES = ("remat", "split", "split-sum", "per-step", "online")
STACK_LIMIT = 32768


def calibration_path() -> str:
    """The calibration `auto` uses: this machine's if `bench --calibrate` wrote one, else the packaged one."""
    return USER if os.path.isfile(USER) else PACKAGED


def load_calibration(path: str | None = None) -> dict[str, Any]:
    path = path or calibration_path()
    with open(path) as f:
        data = json.load(f)
    if "cases" not in data:
        raise ValueError(f"{path} is not an fxsoftmax calibration (no 'cases')")
    data["path"] = path
    return data


@dataclass
class AutoChooser:
    """Callable(site) -> (Plan, reason). `kind` is "cpu" or "gpu"; `threads` defaults to all cores."""

    kind: str = "cpu"
    threads: int | None = None
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"unknown device kind {self.kind!r}; accepted: cpu, gpu")
        self.threads = self.threads or os.cpu_count() or 1

    def __call__(self, site: Any) -> tuple[Plan, str]:
        shape, dim = tuple(site.shape or ()), site.dim
        last = dim == len(shape) - 1
        if self.kind == "gpu":
            name = "fused" if last else "remat"
            why = "GPU rule: one kernel, exp recomputed" if last else "GPU rule: non-innermost reduction -> remat"
            return parse_policy(name), f"auto: {why}"
        if not shape or any(not isinstance(d, int) for d in shape):
            return parse_policy("remat"), "auto: dynamic shape, no calibration point -> remat (no stored intermediate)"
        row = shape[dim]
        if math.prod(shape) == 0:
            return parse_policy("split"), "auto: empty tensor, nothing to compute -> split"
        rows = math.prod(shape) // row
        return self.choose(rows, row, last, str(site.compute_dtype).replace("torch.", ""))

    def choose(self, rows: int, row: int, last: bool, dtype: str = "float32") -> tuple[Plan, str]:
        """Best preset of the nearest calibrated case."""
        if self.calibration is None:
            self.calibration = load_calibration()
        cases = [c for c in self.calibration["cases"] if c["last_dim"] == last] or self.calibration["cases"]
        same_dtype = [c for c in cases if c["dtype"] == dtype]
        cases = same_dtype or [c for c in cases if c["dtype"] == "float32"] or cases
        best_threads = min({c["threads"] for c in cases}, key=lambda t: (abs(t - self.threads), -t))
        cases = [c for c in cases if c["threads"] == best_threads]
        near = min(cases, key=lambda c: abs(math.log2(rows / c["rows"])) + abs(math.log2(row / c["row_len"])))
        times = {p: t for p, t in near["times"].items() if p in CPU_CANDIDATES or (p == "fused" and near.get("fused_stack", 1 << 30) <= STACK_LIMIT)}
        name = min(times, key=times.get)
        others = ", ".join(f"{p} {t:.3g}" for p, t in sorted(times.items(), key=lambda kv: kv[1]) if p != name)
        why = (
            f"auto: nearest calibrated case {near['rows']}x{near['row_len']} {near['dtype']} "
            f"{'last' if near['last_dim'] else 'other'} dim, {near['threads']} thread(s): {name} {times[name]:.3g} ms (vs {others})"
        )
        return parse_policy(name), why
