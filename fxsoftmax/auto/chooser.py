"""The `auto` policy: pick each site's plan from device kind, shape, dtype and thread count.

CPU: the cost model (fxsoftmax.auto.costmodel) predicts each candidate's time from this machine's constants
(fxsoftmax.auto.machine); the fastest wins. Where `fxsoftmax bench --calibrate` measured every preset on this
machine, the best preset of the nearest calibrated case decides instead (log-distance over rows and row
length). The calibration shipped with the package (another machine) is the fallback when the constants
cannot be measured.

GPU: a rule. From the founding discussion (IREE #17469): a GPU recomputes exp rather than store it, and
one kernel beats several ("the cost of the additional kernel often outweighs the cost of computing the
elementwise part twice"): `fused`, IREE's one-dispatch remat. For reductions over a non-innermost dim
`remat` instead, whose dispatches compute correctly on every Vulkan device measured here, where IREE's
fused softmax does not, and which was the fastest plan that compiles there on an H200. On cuda, rows of
SPLIT_ROWS elements get `split`: on an H200 (IREE 3.9 and 3.13, one run each, docs/results/gpu-h200) it
took 0.30-0.99x `fused`'s time on rows of 512 to 4096, in attention and alone, in 11 of 12 cases (the
twelfth 1.004x), while `fused` took 0.78-0.82x `split`'s on rows of 16384. Nobody has measured hip or Vulkan.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from .. import quirks
from ..core.dtypes import dtype_name
from ..core.policy import CPU_CANDIDATES, IN_OUTPUT, Plan, in_output_applies, parse_policy
from . import machine
from .costmodel import predict_ms

PACKAGED = os.path.join(os.path.dirname(__file__), "data", "calibration_cpu.json")
USER = os.environ.get("FXSOFTMAX_CALIBRATION") or os.path.join(
    os.path.expanduser("~"), ".cache", "fxsoftmax", "calibration_cpu.json"
)
# `fused` (IREE's own softmax, at most 96 B of stack in every case of the committed sweep) joins the CPU
# candidates for innermost dims (quirks.fused_is_a_cpu_candidate) and, from a calibration, where it
# measured fused's stack within IREE's limit.
STACK_LIMIT = 32768
SPLIT_ROWS = range(512, 4097)  # innermost row lengths that get `split` on cuda


def calibration_path() -> str:
    """This machine's calibration if `bench --calibrate` wrote one, else the packaged one."""
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
    """Callable(site) -> (Plan, reason). `kind` is "cpu" or "gpu"; `threads` defaults to all cores; `device`
    names the GPU's runtime ("cuda", "hip", "vulkan") where its measured rule applies."""

    kind: str = "cpu"
    threads: int | None = None
    calibration: dict[str, Any] | None = None  # given: the nearest calibrated case decides
    constants: machine.Constants | None = None  # given: the cost model uses these
    device: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"unknown device kind {self.kind!r}; accepted: cpu, gpu")
        self.threads = self.threads or os.cpu_count() or 1

    def __call__(self, site: Any) -> tuple[Plan, str]:
        shape, dim = tuple(site.shape or ()), site.dim
        last = dim == len(shape) - 1
        if self.kind == "gpu":
            return self.gpu_rule(shape[dim] if shape else None, last)
        dtypes = {dtype_name(getattr(site, a, site.compute_dtype)) for a in ("x_dtype", "in_dtype", "compute_dtype", "out_dtype")}
        in_output = in_output_applies(last, dtypes)
        if not shape or any(not isinstance(d, int) for d in shape):
            if in_output:
                return parse_policy(IN_OUTPUT), "auto: dynamic shape, no size to model -> inplace (x read once, y written once, one exp)"
            return parse_policy("remat"), "auto: dynamic shape, no size to model -> remat (no stored intermediate)"
        row = shape[dim]
        if math.prod(shape) == 0:
            return parse_policy("split"), "auto: empty tensor, nothing to compute -> split"
        in_dtype = dtype_name(getattr(site, "in_dtype", site.compute_dtype))
        return self.choose(math.prod(shape) // row, row, last, in_dtype, in_output=in_output)

    def gpu_rule(self, row: Any, last: bool) -> tuple[Plan, str]:
        """The GPU's plan for a softmax over rows of `row` elements (an int, or a symbolic size)."""
        if not last:
            return parse_policy("remat"), "auto: GPU rule: non-innermost reduction -> remat"
        if self.device == "cuda" and isinstance(row, int) and row in SPLIT_ROWS:
            return parse_policy("split"), f"auto: cuda rule: rows of {SPLIT_ROWS.start}-{SPLIT_ROWS.stop - 1} -> split (measured faster than fused on an H200)"
        return parse_policy("fused"), "auto: GPU rule: one kernel, exp recomputed"

    def choose(self, rows: int, row: int, last: bool, dtype: str = "float32", in_output: bool = True) -> tuple[Plan, str]:
        """The plan for a [rows, row] softmax over the last dim (or another): by the cost model, or by
        this machine's calibration where one was measured. `in_output`: whether the site's dtypes all are
        float32, which `inplace` needs."""
        if self.calibration is None and self.constants is None:
            if os.path.isfile(USER):
                self.calibration = load_calibration(USER)
            else:
                try:
                    self.constants = machine.constants()
                except Exception as e:  # noqa: BLE001 - any failure to measure falls back, and says why
                    self.calibration = load_calibration(PACKAGED)
                    self.calibration["fallback_reason"] = f"{type(e).__name__}: {e}"
        if self.calibration is None:
            return self.predict(rows, row, last, dtype, in_output)
        return self.nearest(rows, row, last, dtype, in_output)

    def predicted_ms(self, rows: int, row: int, last: bool, dtype: str = "float32", in_output: bool = True) -> dict[str, float]:
        """The cost model's time for every CPU candidate, fastest first."""
        in_output = in_output and in_output_applies(last, {dtype})
        self.constants = self.constants or machine.constants()
        names = CPU_CANDIDATES + ("fused",) * quirks.fused_is_a_cpu_candidate(last) + (IN_OUTPUT,) * in_output
        times = {p: predict_ms(parse_policy(p), rows, row, last, dtype, self.threads, self.constants) for p in names}
        return dict(sorted(times.items(), key=lambda kv: kv[1]))

    def predict(self, rows: int, row: int, last: bool, dtype: str = "float32", in_output: bool = True) -> tuple[Plan, str]:
        times = self.predicted_ms(rows, row, last, dtype, in_output)
        name = next(iter(times))
        others = ", ".join(f"{p} {t:.3g}" for p, t in times.items() if p != name)
        quality = machine.describe_quality(self.constants)
        return parse_policy(name), (f"auto: cost model for {rows}x{row} {dtype} {'last' if last else 'other'} dim, "
                                    f"{self.threads} thread(s): {name} {times[name]:.3g} ms predicted (vs {others})"
                                    + (f"; {quality}" if quality else ""))

    def nearest(self, rows: int, row: int, last: bool, dtype: str = "float32", in_output: bool = True) -> tuple[Plan, str]:
        """Best preset of the nearest calibrated case (`inplace` where the site takes it)."""
        cases = [c for c in self.calibration["cases"] if c["last_dim"] == last] or self.calibration["cases"]
        same_dtype = [c for c in cases if c["dtype"] == dtype]
        cases = same_dtype or [c for c in cases if c["dtype"] == "float32"] or cases
        best_threads = min({c["threads"] for c in cases}, key=lambda t: (abs(t - self.threads), -t))
        cases = [c for c in cases if c["threads"] == best_threads]
        near = min(cases, key=lambda c: abs(math.log2(rows / c["rows"])) + abs(math.log2(row / c["row_len"])))
        usable = {*CPU_CANDIDATES, *(["fused"] if near.get("fused_stack", 1 << 30) <= STACK_LIMIT else []),
                  *([IN_OUTPUT] if in_output and in_output_applies(last, {dtype}) else [])}
        times = {p: t for p, t in near["times"].items() if p in usable}
        name = min(times, key=times.get)
        others = ", ".join(f"{p} {t:.3g}" for p, t in sorted(times.items(), key=lambda kv: kv[1]) if p != name)
        fallback = self.calibration.get("fallback_reason")
        why = (
            (f"auto: machine constants unavailable ({fallback}); packaged " if fallback else "auto: ")
            + f"nearest calibrated case {near['rows']}x{near['row_len']} {near['dtype']} "
            f"{'last' if near['last_dim'] else 'other'} dim, {near['threads']} thread(s): {name} {times[name]:.3g} ms (vs {others})"
        )
        return parse_policy(name), why
