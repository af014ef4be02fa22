"""This machine: what reports say about it (`describe`), and the few constants of its CPU that `auto`'s
cost model needs, measured with IREE probes (fxsoftmax.auto.probes) in seconds on first use and cached per
machine: memory read and write cost, an in-cache pass and an exp per element and dtype, rounding a result
to bf16, and the cost of a dispatch and of a call, each with one thread and with all cores.

Measurements survive a busy machine: each probe's time is its best of several calls, taken from the CPU
time its threads used where other processes slowed the wall clock. The other processes' share of the CPU
during the measurement is recorded, and so are checks the constants must pass (all cores are not slower
per element than one; data in cache is not slower than data from memory). Constants that fail a check are
measured again at once; constants taken under load are measured again at a later first use on a quiet
machine, and `auto`'s reason line says so."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Sequence

from ..backends import flags
from ..backends.compiler import iree_compile
from ..backends.runtime import IreeRunner, physical_cores
from ..backends.targets import Target, host_cpu_flags, host_cpu_model
from . import probes
from .probes import DTYPES, IN_OUTPUT_SHAPE, IN_OUTPUT_SHORT_ROWS, MID, REPEATS, ROW, ROWS, STREAM, TINY

CACHE_DIR = os.environ.get("FXSOFTMAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fxsoftmax")
BUSY = 0.25  # others' share of all CPUs above which a measurement counts as taken under load
SLACK = 1.15  # how far a check lets two measurements disagree before it calls them inconsistent
ATTEMPTS = 3  # measurements tried when the checks fail


@dataclass(frozen=True)
class Threads:
    """Costs with a given number of threads working at once (aggregate over those threads)."""

    read_ns_per_byte: dict[str, float]  # a row reduction reading x: "mid" (8 MiB) and "large" (256 MiB)
    write_ns_per_byte: dict[str, float]  # writing a result as large (an elementwise pass minus its read)
    columns_read_ns_per_element: dict[str, float]  # a reduction over the outer dim of a [512, 4096] tensor, per dtype
    pass_ns_per_element: dict[str, float]  # one more pass over data already in cache, per dtype
    exp_ns_per_element: dict[str, float]  # one exp, per dtype
    dispatch_us: float  # one more dispatch in a call
    call_us: float  # a call of a one-dispatch function on a tiny tensor
    narrow_write_ns_per_element: dict[str, float]  # rounding a result to the dtype from f32 as it is written
    outer_exp_ns_per_element: dict[str, float]  # exp(x - m) over a softmax's outer dim, x and the result in the dtype
    in_output_row_ns: float  # `inplace`'s kernel: one more row of the same elements


@dataclass(frozen=True)
class Constants:
    """Constants for one thread and for all cores, and the cache sizes the model compares against."""

    machine: str
    cores: int
    l2_bytes: int  # per core
    vector_lanes_f32: int
    by_threads: dict[int, Threads] = field(default_factory=dict)
    seconds_to_measure: float = 0.0
    load: float = 0.0  # other processes' share of all CPUs while these were measured
    violations: list[str] = field(default_factory=list)  # checks the constants failed
    note: str = ""  # why they were measured (again), for `auto`'s reason line

    @property
    def trusted(self) -> bool:
        """Measured on a quiet machine and consistent; else measured again at a later first use."""
        return self.load <= BUSY and not self.violations

    def at(self, threads: int) -> Threads:
        """Costs for `threads` working at once: measured at 1 and all cores, in between interpolated."""
        ts = sorted(self.by_threads)
        lo = max((t for t in ts if t <= threads), default=ts[0])
        hi = min((t for t in ts if t >= threads), default=ts[-1])
        if lo == hi:
            return self.by_threads[lo]
        a, b, w = self.by_threads[lo], self.by_threads[hi], (threads - lo) / (hi - lo)

        def mix(p, q):  # a constant, or one per dtype or working-set size
            return {k: mix(p[k], q[k]) for k in p} if isinstance(p, dict) else p + (q - p) * w

        return Threads(**{f.name: mix(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Threads)})

    def memory_ns_per_byte(self, threads: int, footprint: int) -> tuple[float, float]:
        """(read, write) cost per byte for a working set of `footprint` bytes: the 8 MiB probe's up to
        twice its size, the 256 MiB probe's from twice its size, log-interpolated in between."""
        k = self.at(threads)
        lo, hi = math.log(2 * MID * 4), math.log(2 * STREAM * 4)
        w = min(max((math.log(max(footprint, 1)) - lo) / (hi - lo), 0.0), 1.0)
        return tuple(c["mid"] + (c["large"] - c["mid"]) * w for c in (k.read_ns_per_byte, k.write_ns_per_byte))  # type: ignore[return-value]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Constants":
        by = {int(t): Threads(**v) for t, v in data.pop("by_threads").items()}
        return cls(**data, by_threads=by)


def has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16); without them bf16 is emulated."""
    isa = host_cpu_flags()
    return "avx512_bf16" in isa or "amx_bf16" in isa


def describe() -> dict:
    """CPU model, cores, ISA flags that matter here, versions."""
    import torch

    interesting = sorted(f for f in host_cpu_flags() if f.startswith(("avx", "fma", "amx", "sse4")) or "bf16" in f)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {
        "cpu": host_cpu_model(),
        "cores": os.cpu_count(),
        "isa": interesting,
        "bf16_instructions": has_bf16(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "iree_compiler": version("iree-base-compiler"),
        "iree_runtime": version("iree-base-runtime"),
    }


def machine_key() -> str:
    """CPU model, ISA flags, core count and IREE version: what the constants depend on."""
    text = json.dumps([host_cpu_model(), sorted(host_cpu_flags()), physical_cores(), version("iree-base-compiler"), probes.VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | None = None) -> str:
    return os.path.join(cache_dir or CACHE_DIR, f"machine-{machine_key()}.json")


def constants(cache_dir: str | None = None) -> Constants:
    """This machine's constants: read from the cache, or measured now (a few seconds) and cached. Constants
    that were not trusted (taken under load, or inconsistent) are measured again once the machine is quiet."""
    path = cache_path(cache_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # One process measures while the others wait (test workers, a build farm): two measuring at once
    # would each time the probes against the other's load, and cache that.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _read(path)
        if cached is not None and (cached.trusted or others_load(0.3) > BUSY):
            return cached
        measured = measure()
        if cached is not None:
            measured = dataclasses.replace(measured, note=f"measured again: the cached constants {_distrust(cached)}")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(measured.to_json(), f, indent=1)
        os.replace(tmp, path)  # never a half-written file
        return measured


def _read(path: str) -> Constants | None:
    try:
        with open(path) as f:
            return Constants.from_json(json.load(f))
    except (OSError, ValueError, TypeError, KeyError):  # none yet, or written by another version
        return None


def _distrust(c: Constants) -> str:
    why = [f"were taken while other processes used {c.load:.0%} of the CPU"] if c.load > BUSY else []
    return " and ".join(why + [f"failed a check ({'; '.join(c.violations)})"] * bool(c.violations))


def describe_quality(c: Constants) -> str:
    """How far to trust `c`, for `auto`'s reason line ("" when there is nothing to say)."""
    if not c.trusted:
        return f"machine constants provisional: they {_distrust(c)}; measured again at the next use on a quiet machine"
    return f"machine constants {c.note}" if c.note else ""


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> float:
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")


class _LoadMeter:
    """Other processes' share of all CPUs between start and `share()`."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[int, int, float]:
        try:
            return (*_cpu_ticks(), _own_ticks())
        except (OSError, ValueError, IndexError):  # no /proc/stat: no load known
            return 0, 0, 0.0

    def share(self) -> float:
        (b0, t0, o0), (b1, t1, o1) = self.start, self._sample()
        return max(0.0, min(1.0, (b1 - b0 - (o1 - o0)) / (t1 - t0))) if t1 > t0 else 0.0


def others_load(seconds: float) -> float:
    """Other processes' share of all CPUs over the next `seconds`."""
    meter = _LoadMeter()
    time.sleep(seconds)
    return meter.share()


def best_call_ms(runner: IreeRunner, args: list, calls: int, workers: int, latency: bool = False, budget_s: float = 0.2) -> float:
    """A loaded function's time per call in ms, its arguments placed, after a warm-up: the best of at least
    `calls` calls, and of as many as fit in `budget_s`. Work (`latency` False) is timed instead by the CPU
    time its `workers` spent per call, where other processes slowed the wall clock more than that (the CPU
    time of threads other than the caller is booked at scheduler ticks, so it is read over the whole budget,
    not per call); a call's latency by the wall clock alone."""
    clock = time.thread_time if workers == 1 else time.process_time  # local-sync runs in the calling thread
    runner.invoke(args)
    best, n, start, cpu_start = math.inf, 0, time.perf_counter(), clock()
    while n < calls or time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        runner.invoke(args)
        best, n = min(best, time.perf_counter() - t), n + 1
    return 1e3 * (best if latency else min(best, (clock() - cpu_start) / n / workers))


def median_call_ms(runner, args, calls: int, storage: Sequence = ()) -> float:
    """Median ms of `calls` calls of a loaded function after one warm-up, its arguments placed once (and
    `storage`, device buffers for its results, appended)."""
    return median_placed_ms(runner, [*(runner.put(a) for a in args), *storage], calls)


def median_placed_ms(runner, placed: Sequence, calls: int) -> float:
    """Median ms of `calls` calls of a loaded function on arguments already on its device, after one warm-up."""
    runner.invoke(placed)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        runner.invoke(placed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure() -> Constants:
    """Compile the probes for this CPU and time them with one thread and with all cores; measure again
    (up to ATTEMPTS times) while the constants fail a check, and keep the most consistent."""
    start, meter = time.perf_counter(), _LoadMeter()
    vmfb = iree_compile(probes.module(), flags.module_flags(Target("cpu"), ["rewritten"]), what="the machine probes").output
    inputs, cores = _inputs(), physical_cores()
    tried = []
    for _ in range(ATTEMPTS):
        by_threads = {threads: _measure_threads(vmfb, inputs, threads) for threads in sorted({1, cores})}
        tried.append((len(check(by_threads, cores)), by_threads))
        if not tried[-1][0]:
            break
    by_threads = min(tried, key=lambda t: t[0])[1]
    isa = host_cpu_flags()
    lanes = 16 if "avx512f" in isa else 8 if "avx2" in isa else 4
    return Constants(host_cpu_model(), cores, _l2_bytes(), lanes, by_threads, round(time.perf_counter() - start, 2),
                     round(meter.share(), 3), check(by_threads, cores))


def _inputs() -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    big = torch.randn(STREAM, generator=gen)
    return {"big": big, "repeats": torch.zeros(REPEATS), "tiny": torch.randn(TINY, TINY, generator=gen),
            "rows": {d: torch.randn(ROWS, ROW, generator=gen).to(getattr(torch, d)) for d in DTYPES},
            "columns": {d: big[:MID].view(MID // 4096, 4096).to(getattr(torch, d)) for d in DTYPES}}


def _measure_threads(vmfb: bytes, inputs: dict, threads: int) -> Threads:
    """Every constant with `threads` threads working at once."""
    driver = "local-sync" if threads == 1 else "local-task"
    big, rows = inputs["big"], inputs["rows"]

    def ms(fn: str, args: list, calls: int = 5, latency: bool = False, result: tuple = ()) -> float:
        runner = IreeRunner(vmfb, driver, fn)
        storage = runner.allocate(4 * math.prod(result or (1,)))  # the result's storage, reused by every call
        return best_call_ms(runner, [*(runner.put(a) for a in args), storage], calls, threads, latency)

    one, two = ms("one", [inputs["tiny"]], 200, True, (TINY,)), ms("two", [inputs["tiny"]], 200, True)
    read = {"large": ms("read", [big.view(STREAM // ROW, ROW)], result=(STREAM // ROW,)) * 1e6 / (4 * STREAM),
            "mid": (ms("read_mid", [big[:MID].view(MID // ROW, ROW)], 21, result=(MID // ROW,)) - one) * 1e6 / (4 * MID)}
    stream = {"large": ms("stream", [big], result=(STREAM,)) * 1e6 / (4 * STREAM),
              "mid": (ms("stream_mid", [big[:MID]], 21, result=(MID,)) - one) * 1e6 / (4 * MID)}
    columns = {d: (ms(f"read_columns_{t}", [inputs["columns"][d]], 21, result=(4096,)) - one) * 1e6 / MID for d, t in DTYPES.items()}
    per_element = 1e6 / (ROWS * ROW * REPEATS)
    passes = {d: ms(f"pass_{t}", [rows[d], inputs["repeats"]], result=(ROWS,)) * per_element for d, t in DTYPES.items()}
    exps = {d: max(ms(f"exp_{t}", [rows[d], inputs["repeats"]], result=(ROWS,)) * per_element - passes[d], 0.0) for d, t in DTYPES.items()}
    write = {s: max(stream[s] - read[s], 0.0) for s in read}
    # the same call in each dtype: the difference is the kernel's conversions, mostly its two 16-bit writes
    # per element (z, then y; a widening read is a shift)
    n = math.prod(IN_OUTPUT_SHAPE)
    in_output = {d: ms(f"in_output_{t}", [rows[d].view(-1)[:n].view(IN_OUTPUT_SHAPE)], 48, result=IN_OUTPUT_SHAPE) for d, t in DTYPES.items()}
    narrow_write = {d: max(t - in_output["float32"], 0.0) * 1e6 / (2 * n) for d, t in in_output.items()}
    short = ms("in_output_rows_f32", [rows["float32"].view(-1)[:n].view(IN_OUTPUT_SHORT_ROWS)], 48, result=IN_OUTPUT_SHORT_ROWS)
    in_output_row = max(short - in_output["float32"], 0.0) * 1e6 / (IN_OUTPUT_SHORT_ROWS[0] - IN_OUTPUT_SHAPE[0])
    # bf16 here runs well below f32's pace on some CPUs (AMD EPYC Zen 4: 1.9 against 0.8 ns per element)
    outer_exp = {d: (ms(f"outer_exp_{t}", [inputs["columns"][d], inputs["columns"]["float32"][0]], 21, result=(MID,)) - one) * 1e6 / MID
                 for d, t in DTYPES.items()}
    return Threads(read, write, columns, passes, exps, max(two - one, 0.0) * 1e3, one * 1e3, narrow_write, outer_exp, in_output_row)


def check(by_threads: dict[int, Threads], cores: int) -> list[str]:
    """What must hold of constants measured right: the checks they fail (none for a good measurement)."""
    one, all_ = by_threads[1], by_threads[max(by_threads)]
    failed = []
    if cores > 1:
        failed += [f"all cores slower per element than one ({name} {dt}: {a:.3g} > {b:.3g})"
                   for name, dt, a, b in [("exp", d, all_.exp_ns_per_element[d], one.exp_ns_per_element[d]) for d in DTYPES]
                   + [("pass", d, all_.pass_ns_per_element[d], one.pass_ns_per_element[d]) for d in DTYPES]
                   + [("exp over an outer dim", d, all_.outer_exp_ns_per_element[d], one.outer_exp_ns_per_element[d]) for d in DTYPES]
                   + [("column read", d, all_.columns_read_ns_per_element[d], one.columns_read_ns_per_element[d]) for d in DTYPES]
                   + [("memory read", "", all_.read_ns_per_byte["large"], one.read_ns_per_byte["large"])] if a > SLACK * b]
    for threads, k in by_threads.items():
        if k.read_ns_per_byte["mid"] > SLACK * k.read_ns_per_byte["large"]:
            failed.append(f"data in the last-level cache read slower than from memory with {threads} thread(s)")
        if k.pass_ns_per_element["float32"] > SLACK * 4 * k.read_ns_per_byte["large"]:
            failed.append(f"a pass over data in cache slower than one from memory with {threads} thread(s)")
    return failed


def _l2_bytes() -> int:
    """Per-core L2 size from sysfs (1 MiB when unknown)."""
    try:
        base = "/sys/devices/system/cpu/cpu0/cache"
        for index in sorted(os.listdir(base)):
            with open(os.path.join(base, index, "level")) as f:
                if f.read().strip() == "2":
                    with open(os.path.join(base, index, "size")) as f:
                        size = f.read().strip()
                    return int(size.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
    except (OSError, ValueError):
        pass
    return 1 << 20
