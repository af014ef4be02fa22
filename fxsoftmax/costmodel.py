"""The `auto` policy: pick each site's plan from device kind, shape, dtype and thread count.

CPU: a cost model predicts each candidate plan's time from what its dispatches move and compute (bytes
read and written per dispatch, whether a row's working set stays in cache, exps per element, passes,
dispatches, rows per thread) and this machine's constants (`fxsoftmax.machine`: measured with IREE in a
few seconds on first use, cached per machine). The plan with the least predicted time wins.

Where `fxsoftmax bench --calibrate` measured every preset on this machine, `auto` takes the best preset
of the nearest calibrated case instead (log-distance over rows and row length). The calibration shipped
with the package (another machine) is the fallback when the constants cannot be measured.

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

from . import machine, quirks
from .group import dtype_name
from .policy import IN_OUTPUT, Plan, in_output_applies, parse_policy

PACKAGED = os.path.join(os.path.dirname(__file__), "data", "calibration_cpu.json")
USER = os.environ.get("FXSOFTMAX_CALIBRATION") or os.path.join(
    os.path.expanduser("~"), ".cache", "fxsoftmax", "calibration_cpu.json"
)
# Plans `auto` may pick on CPU: each compiles under a 4 KiB stack for the largest shapes measured
# (tests/test_iree_cpu.py), so `auto` never exceeds IREE's stack limit. `fused` (IREE's own softmax,
# at most 96 B of stack in every case of the committed sweep) joins for innermost dims
# (quirks.fused_is_a_cpu_candidate) and, from a calibration, where it measured fused's stack within the limit.
CPU_CANDIDATES = ("remat", "split", "split-sum", "per-step", "online")
STACK_LIMIT = 32768
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def calibration_path() -> str:
    """This machine's calibration if `bench --calibrate` wrote one, else the packaged one."""
    return USER if os.path.isfile(USER) else PACKAGED


@dataclass(frozen=True)
class DispatchWork:
    """What one dispatch of a plan does per element of x."""

    reductions: int  # reductions along the softmax dim (an online max+sum counts once)
    passes: int  # sweeps over each row: one per reduction, plus one that writes a full-size result
    reads: tuple[str, ...]  # full-size tensors read from memory: "x", a stored "z"
    writes: tuple[str, ...]  # full-size tensors written: a stored "z", "y"
    exps: int  # exps per element
    scalar: bool = False  # IREE 3.9 does not vectorize the online max+sum (README, `online`)


def dispatch_work(plan: Plan) -> list[DispatchWork]:
    """The plan's dispatches, as the cost model sees them. `fused` is IREE's softmax: max, sum of exp,
    then exp / sum, one dispatch; `inplace` the same with exp kept in the output."""
    if plan.is_fused:
        return [DispatchWork(reductions=2, passes=3, reads=("x",), writes=("y",), exps=2)]
    if plan.in_output:  # max, exp into y while summing, scale y in place
        return [DispatchWork(reductions=2, passes=3, reads=("x",), writes=("y",), exps=1)]
    stored = set(plan.stored())
    work = []
    for group in plan.groups:
        steps = {s.n for s in group}
        online = any(s.online for s in group)
        reductions = 1 if online else sum(n in (1, 3) for n in steps)
        ends_with_a_reduction = group[-1].n in (1, 3)
        reads = ("x",) * any(s.n in (1, 2) or s.online for s in group) + ("z",) * (2 in stored and 2 not in steps)
        writes = ("z",) * (any(s.n == 2 and not s.recompute for s in group) and 2 in stored) + ("y",) * (4 in steps)
        work.append(DispatchWork(reductions, reductions + (0 if ends_with_a_reduction else 1), reads, writes,
                                 2 if online else int(2 in steps), online))
    return work


def predict_ms(plan: Plan, rows: int, row: int, innermost: bool, dtype: str, threads: int, constants: machine.Constants) -> float:
    """Predicted milliseconds of one call of `plan` on a [rows, row] softmax."""
    return sum(predict_dispatches_ms(plan, rows, row, innermost, dtype, threads, constants)) + constants.at(threads).call_us * 1e-3


def predict_dispatches_ms(plan: Plan, rows: int, row: int, innermost: bool, dtype: str, threads: int,
                          constants: machine.Constants) -> list[float]:
    """Predicted milliseconds of each of the plan's dispatches. x and y are `dtype`; a stored z is in the
    compute dtype (float32 for 16-bit floats)."""
    elements = rows * row
    nbytes = {"x": ELEMENT_BYTES.get(dtype, 4), "y": ELEMENT_BYTES.get(dtype, 4), "z": max(ELEMENT_BYTES.get(dtype, 4), 4)}
    nbytes = {t: b * elements for t, b in nbytes.items()}
    dtype = dtype if dtype in machine.DTYPES else "float32"
    work = dispatch_work(plan)
    footprint = nbytes["x"] + sum(nbytes[t] for w in work for t in w.writes)
    # whole rows per thread: with fewer rows than threads even an elementwise dispatch gains nothing, as the
    # reductions before it left the rows in their cores' caches (1x1048576 bf16 here: per-step 0.786 ms with
    # 1 thread, 0.80 with 2; remat 0.969 and 0.996)
    used = min(threads, rows)
    k = constants.at(used)
    per_pass = k.pass_ns_per_element[dtype] * elements
    read, write = constants.memory_ns_per_byte(used, footprint)
    reduce_read = read if innermost else read * k.columns_read_ns_per_byte / k.read_ns_per_byte["mid"]
    dispatch_ns = constants.at(threads).dispatch_us * 1e3  # the executor's cost, all its threads
    times = []
    for w in work:
        read_bytes, write_bytes = sum(nbytes[t] for t in w.reads), sum(nbytes[t] for t in w.writes)
        if footprint <= constants.l2_bytes * used:  # everything stays in L2
            memory, rereads = (len(w.reads) + len(w.writes)) * per_pass, 0.0
        else:
            memory = read_bytes * (reduce_read if w.reductions else read) + write_bytes * write
            row_stays = innermost and (read_bytes + write_bytes) // rows <= constants.l2_bytes // 2
            rereads = 0.0 if row_stays else (w.passes - 1) * read_bytes * reduce_read
        exps = w.exps * elements * k.exp_ns_per_element[dtype] * (constants.vector_lanes_f32 if w.scalar else 1)
        # a full-size result in a 16-bit dtype is rounded from f32 once per element (`inplace`: z, then y)
        narrow_writes = sum(nbytes[t] < 4 * elements for t in w.writes) * (2 if plan.in_output else 1)
        compute = w.passes * per_pass + exps + narrow_writes * k.narrow_write_ns_per_element[dtype] * elements
        if plan.in_output:  # it prefetches, so its traffic and compute overlap
            memory, compute = 0.0, max(memory, compute)
        times.append((memory + rereads + compute + dispatch_ns) * 1e-6)
    return times


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
    calibration: dict[str, Any] | None = None  # given: the nearest calibrated case decides
    constants: machine.Constants | None = None  # given: the cost model uses these

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
        return parse_policy(name), (f"auto: cost model for {rows}x{row} {dtype} {'last' if last else 'other'} dim, "
                                    f"{self.threads} thread(s): {name} {times[name]:.3g} ms predicted (vs {others})")

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
            (f"auto: machine constants unavailable ({fallback}); packaged " if fallback else "auto: ") + f"nearest calibrated case {near['rows']}x{near['row_len']} {near['dtype']} "
            f"{'last' if near['last_dim'] else 'other'} dim, {near['threads']} thread(s): {name} {times[name]:.3g} ms (vs {others})"
        )
        return parse_policy(name), why
