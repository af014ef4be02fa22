"""This machine: what reports say about it (`describe`), and the few constants of its CPU that `auto`'s
cost model needs, measured with IREE in seconds on first use and cached per machine: memory read and
write cost, an in-cache pass and an exp per element and dtype, rounding a result to bf16, and the cost of a
dispatch, each with one thread and with all cores."""

from __future__ import annotations

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

from ..backends import flags
from ..backends.compiler import iree_compile
from ..backends.runtime import IreeRunner, physical_cores
from ..backends.targets import Target
from ..core.dtypes import dtype
from ..core.group import GroupSpec
from ..core.policy import IN_OUTPUT, IN_OUTPUT_PLAN
from ..lowering.inplace import in_output_definitions

CACHE_DIR = os.environ.get("FXSOFTMAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fxsoftmax")
DTYPES = {d: dtype(d).mlir for d in ("float32", "bfloat16")}  # what the probes measure
# Probe sizes: the memory probes move 256 MiB each way (beyond the caches of the machines measured so
# far); the in-cache probes re-read one 64 KiB f32 row per thread REPEATS times inside one dispatch.
STREAM = 1 << 26
MID = 1 << 21  # 8 MiB of f32: beyond L2, within the last-level caches of the machines measured so far
ROWS, ROW, REPEATS = 8, 16384, 256
TINY = 64
# `inplace`'s own kernel in cache (512 KiB of f32), CHAINED times in a call, in each dtype
IN_OUTPUT_SHAPE, CHAINED = (32, 4096), 16
PROBES_VERSION = 2  # part of the cache key: a cache written by other probes is measured again


@dataclass(frozen=True)
class Threads:
    """Costs with a given number of threads working at once (aggregate over those threads)."""

    read_ns_per_byte: dict[str, float]  # a row reduction reading x: "mid" (8 MiB) and "large" (256 MiB)
    write_ns_per_byte: dict[str, float]  # writing a result as large (an elementwise pass minus its read)
    columns_read_ns_per_byte: float  # a reduction over the outer dim of an 8 MiB [rows, 4096] tensor
    pass_ns_per_element: dict[str, float]  # one more pass over data already in cache, per dtype
    exp_ns_per_element: dict[str, float]  # one exp, per dtype
    dispatch_us: float  # one more dispatch in a call
    call_us: float  # a call of a one-dispatch function on a tiny tensor
    narrow_write_ns_per_element: dict[str, float]  # rounding a result to the dtype from f32 as it is written


@dataclass(frozen=True)
class Constants:
    """Constants for one thread and for all cores, and the cache sizes the model compares against."""

    machine: str
    cores: int
    l2_bytes: int  # per core
    vector_lanes_f32: int
    by_threads: dict[int, Threads] = field(default_factory=dict)
    seconds_to_measure: float = 0.0

    def at(self, threads: int) -> Threads:
        """Costs for `threads` working at once: measured at 1 and all cores, in between interpolated."""
        ts = sorted(self.by_threads)
        lo = max((t for t in ts if t <= threads), default=ts[0])
        hi = min((t for t in ts if t >= threads), default=ts[-1])
        if lo == hi:
            return self.by_threads[lo]
        a, b, w = self.by_threads[lo], self.by_threads[hi], (threads - lo) / (hi - lo)
        mix = lambda p, q: p + (q - p) * w  # noqa: E731
        return Threads(
            {s: mix(a.read_ns_per_byte[s], b.read_ns_per_byte[s]) for s in a.read_ns_per_byte},
            {s: mix(a.write_ns_per_byte[s], b.write_ns_per_byte[s]) for s in a.write_ns_per_byte},
            mix(a.columns_read_ns_per_byte, b.columns_read_ns_per_byte),
            {d: mix(a.pass_ns_per_element[d], b.pass_ns_per_element[d]) for d in a.pass_ns_per_element},
            {d: mix(a.exp_ns_per_element[d], b.exp_ns_per_element[d]) for d in a.exp_ns_per_element},
            mix(a.dispatch_us, b.dispatch_us), mix(a.call_us, b.call_us),
            {d: mix(a.narrow_write_ns_per_element[d], b.narrow_write_ns_per_element[d]) for d in a.narrow_write_ns_per_element},
        )

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
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe() -> dict:
    """CPU model, cores, ISA flags that matter here, versions."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    import torch

    interesting = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "amx", "sse4")) or "bf16" in f)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {
        "cpu": model,
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
    text = json.dumps([describe()["cpu"], sorted(cpu_flags()), physical_cores(), version("iree-base-compiler"), PROBES_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | None = None) -> str:
    return os.path.join(cache_dir or CACHE_DIR, f"machine-{machine_key()}.json")


def constants(cache_dir: str | None = None) -> Constants:
    """This machine's constants: read from the cache, or measured now (a few seconds) and cached. Delete
    the cache file to measure again (e.g. after a first use on a busy machine)."""
    path = cache_path(cache_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # One process measures while the others wait (test workers, a build farm): two measuring at once
    # would each time the probes against the other's load, and cache that.
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(path):
            with open(path) as f:
                return Constants.from_json(json.load(f))
        measured = measure()
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(measured.to_json(), f, indent=1)
        os.replace(tmp, path)  # never a half-written file
        return measured


def _reduce(name: str, arg: str, out: str, dims: str, maps: tuple[str, str], iters: str, body: str, extra: str = "") -> str:
    """A function summing `body`'s value (%v, f32) over the reduction dims of one linalg.generic.
    `extra` is a second, f32 operand (a tensor of zeros) indexed by the repeat dim."""
    eltype = arg.rsplit("x", 1)[-1].rstrip(">")
    ins, types, amap = "%a", arg, f"affine_map<({dims}) -> ({maps[0]})>"
    args, block = f"%a: {arg}", f"%b: {eltype}"
    if extra:
        ins, types, amap = "%a, %k", f"{arg}, {extra}", f"{amap}, affine_map<({dims}) -> (k)>"
        args, block = f"{args}, %k: {extra}", f"{block}, %kk: f32"
    return f"""
  func.func @{name}({args}) -> {out} {{
    %zero = arith.constant 0.0 : f32
    %empty = tensor.empty() : {out}
    %init = linalg.fill ins(%zero : f32) outs(%empty : {out}) -> {out}
    %r = linalg.generic {{indexing_maps = [{amap}, affine_map<({dims}) -> ({maps[1]})>], iterator_types = [{iters}]}}
      ins({ins} : {types}) outs(%init : {out}) {{
      ^bb0({block}, %acc: f32):
        {body}
        %s = arith.addf %v, %acc : f32
        linalg.yield %s : f32
    }} -> {out}
    return %r : {out}
  }}"""


def _stream(name: str, n: int) -> str:
    t = f"tensor<{n}xf32>"
    return f"""
  func.func @{name}(%a: {t}) -> {t} {{
    %empty = tensor.empty() : {t}
    %r = linalg.generic {{indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>], iterator_types = ["parallel"]}}
      ins(%a : {t}) outs(%empty : {t}) {{
      ^bb0(%b: f32, %o: f32):
        %v = arith.addf %b, %b : f32
        linalg.yield %v : f32
    }} -> {t}
    return %r : {t}
  }}"""


def _probe_module() -> str:
    funcs = []
    for t in DTYPES.values():
        # %kk (zeros the compiler cannot see) keeps each repeat's work inside the repeat loop
        load = ("%f = arith.extf %b : bf16 to f32\n        %u = arith.addf %f, %kk : f32" if t == "bf16"
                else "%u = arith.addf %b, %kk : f32")
        for kind, op in (("pass", "%v = arith.addf %u, %u : f32"), ("exp", "%v = math.exp %u : f32")):
            funcs.append(_reduce(f"{kind}_{t}", f"tensor<{ROWS}x{ROW}x{t}>", f"tensor<{ROWS}xf32>", "r, k, j", ("r, j", "r"),
                                 '"parallel", "reduction", "reduction"', f"{load}\n        {op}", f"tensor<{REPEATS}xf32>"))
    double, tiny = "%v = arith.addf %b, %b : f32", f"tensor<{TINY}x{TINY}xf32>"
    row_sum = lambda name, rows, cols: _reduce(name, f"tensor<{rows}x{cols}xf32>", f"tensor<{rows}xf32>", "i, j",  # noqa: E731
                                               ("i, j", "i"), '"parallel", "reduction"', double)
    funcs += [row_sum("read", STREAM // ROW, ROW), row_sum("read_mid", MID // ROW, ROW), row_sum("one", TINY, TINY)]
    funcs.append(_reduce("total", f"tensor<{TINY}xf32>", "tensor<f32>", "i", ("i", ""), '"reduction"', double))
    funcs.append(_reduce("read_columns", f"tensor<{MID // 4096}x4096xf32>", "tensor<4096xf32>", "i, j", ("i, j", "j"),
                         '"reduction", "parallel"', double))
    funcs.append(_stream("stream", STREAM) + _stream("stream_mid", MID))
    funcs.append(f"""
  func.func @two(%a: {tiny}) -> tensor<f32> {{
    %s = call @one(%a) : ({tiny}) -> tensor<{TINY}xf32>
    %t = call @total(%s) : (tensor<{TINY}xf32>) -> tensor<f32>
    return %t : tensor<f32>
  }}""")
    return "module {" + "".join(funcs) + _in_output_probes() + "\n}\n"


def _in_output_probes() -> str:
    """`inplace`'s kernel for each dtype on IN_OUTPUT_SHAPE, CHAINED times (softmax of softmax of x ...),
    as public functions `in_output_<t>`."""
    text = []
    for name, t in DTYPES.items():
        spec = GroupSpec(site=f"probe_{t}", group=1, steps=tuple(IN_OUTPUT_PLAN), dim=1, shape=IN_OUTPUT_SHAPE, inputs=("x",),
                         outputs=("y",), x_dtype=name, in_dtype=name, compute_dtype="float32", out_dtype=name, kernel=IN_OUTPUT)
        fn, definitions = in_output_definitions(spec, list(IN_OUTPUT_SHAPE))
        ty = f"tensor<{IN_OUTPUT_SHAPE[0]}x{IN_OUTPUT_SHAPE[1]}x{t}>"
        calls = "\n    ".join(f"%y{i + 1} = util.call @{fn}(%y{i}) : ({ty}) -> {ty}" for i in range(CHAINED))
        text.append(definitions + f"""
  util.func public @in_output_{t}(%y0: {ty}) -> {ty} {{
    {calls}
    util.return %y{CHAINED} : {ty}
  }}""")
    return "".join(text)


def median_call_ms(runner, args, calls: int) -> float:
    """Median ms of `calls` calls of a loaded function after one warm-up, its arguments placed once."""
    placed = [runner.put(a) for a in args]
    runner.invoke(placed)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        runner.invoke(placed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure() -> Constants:
    """Compile the probes for this CPU and time them with one thread and with all cores."""
    import torch

    start = time.perf_counter()
    vmfb = iree_compile(_probe_module(), flags.module_flags(Target("cpu"), ["rewritten"]), what="the machine probes").output
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(STREAM, generator=gen)
    repeats = torch.zeros(REPEATS)
    rows = {d: torch.randn(ROWS, ROW, generator=gen).to(getattr(torch, d)) for d in DTYPES}
    tiny = torch.randn(TINY, TINY, generator=gen)
    cores = physical_cores()
    by_threads = {}
    for threads in sorted({1, cores}):
        driver = "local-sync" if threads == 1 else "local-task"
        ms = lambda fn, args, calls=5: median_call_ms(IreeRunner(vmfb, driver, fn), args, calls)  # noqa: E731
        one, two = ms("one", [tiny], 200), ms("two", [tiny], 200)
        read = {"large": ms("read", [big.view(STREAM // ROW, ROW)]) * 1e6 / (4 * STREAM),
                "mid": (ms("read_mid", [big[:MID].view(MID // ROW, ROW)], 21) - one) * 1e6 / (4 * MID)}
        stream = {"large": ms("stream", [big]) * 1e6 / (4 * STREAM), "mid": (ms("stream_mid", [big[:MID]], 21) - one) * 1e6 / (4 * MID)}
        columns = (ms("read_columns", [big[:MID].view(MID // 4096, 4096)], 21) - one) * 1e6 / (4 * MID)
        per_element = 1e6 / (ROWS * ROW * REPEATS)
        passes = {d: ms(f"pass_{t}", [rows[d], repeats]) * per_element for d, t in DTYPES.items()}
        exps = {d: max(ms(f"exp_{t}", [rows[d], repeats]) * per_element - passes[d], 0.0) for d, t in DTYPES.items()}
        write = {s: max(stream[s] - read[s], 0.0) for s in read}
        dispatch = max(two - one, 0.0)
        # the same calls and dispatches in each dtype: the difference is the kernel's conversions, mostly its
        # two 16-bit writes per element (z, then y; a widening read is a shift)
        in_output = {d: ms(f"in_output_{t}", [rows[d].view(-1)[: math.prod(IN_OUTPUT_SHAPE)].view(IN_OUTPUT_SHAPE)], 21)
                     for d, t in DTYPES.items()}
        narrow_write = {d: max(t - in_output["float32"], 0.0) * 1e6 / (2 * CHAINED * math.prod(IN_OUTPUT_SHAPE)) for d, t in in_output.items()}
        by_threads[threads] = Threads(read, write, columns, passes, exps, dispatch * 1e3, one * 1e3, narrow_write)
    isa = cpu_flags()
    lanes = 16 if "avx512f" in isa else 8 if "avx2" in isa else 4
    return Constants(describe()["cpu"], cores, _l2_bytes(), lanes, by_threads,
                     round(time.perf_counter() - start, 2))


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
