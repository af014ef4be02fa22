"""Where a module's time goes: each dispatch timed alone by IREE's own benchmark tool, beside the bytes it
moves and the time a plain copy of that many bytes takes on this machine (the copy floor)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Sequence

from ...auto.machine import median_call_ms
from ...backends import flags
from ...backends.artifact import Artifact
from ...backends.compiler import iree_compile
from ...report.inspect import inspect


@dataclass
class DispatchTime:
    dispatch: str  # the executable export IREE named
    steps: str  # the softmax steps it holds ("12", "34", ...)
    bytes_moved: int | None  # read + written in global memory; None when a dimension is dynamic
    ms: float  # median time of one run of the dispatch alone
    floor_ms: float | None  # a copy moving bytes_moved at the measured copy bandwidth

    @property
    def over_floor(self) -> float | None:
        return self.ms / self.floor_ms if self.floor_ms else None


def time_dispatches(art: Artifact, threads: int, copy_bytes_per_ms: float, *, inputs: Sequence = (), repetitions: int = 5,
                    batch: int = 4) -> list[DispatchTime]:
    """Each of the CPU module's softmax dispatches, timed alone with `threads` threads (iree-benchmark-module
    on the benchmarks iree-compile dumps for each executable); `copy_bytes_per_ms`: bytes read plus
    written per millisecond by a plain copy, measured beside. IREE dumps no benchmark for `inplace`'s
    hand-written executable: a module of that one dispatch is timed whole, on `inputs`."""
    if art.target.device != "cpu":
        raise ValueError(f"dispatch timing runs on the CPU; this module is for {art.target}")
    from iree.runtime.benchmark import benchmark_exe

    site_dispatches = [d for s in inspect(art, stack=False).sites for d in s.dispatches]
    device = ["--device=local-sync"] if threads == 1 else ["--device=local-task", f"--task_topology_group_count={threads}"]
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        iree_compile(art.mlir, [*art.flags, *flags.benchmark_dump(tmp)], what="the dispatch benchmarks")
        for name in sorted(f for f in os.listdir(tmp) if f.endswith("_benchmark.mlir")):
            with open(os.path.join(tmp, name)) as f:
                vmfb = iree_compile(_filled(f.read()), [], what=name).output
            module = os.path.join(tmp, name + ".vmfb")
            with open(module, "wb") as f:
                f.write(vmfb)
            res = subprocess.run(
                [benchmark_exe(), f"--module={module}", *device, f"--batch_size={batch}",
                 f"--benchmark_repetitions={repetitions}", "--benchmark_format=json"],
                capture_output=True, text=True, check=True,
            )
            for b in json.loads(res.stdout)["benchmarks"]:
                if b.get("aggregate_name") == "median":
                    fn = b["name"].removeprefix("BM_").split("/")[0]
                    medians[fn] = b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    out = []
    for d in site_dispatches:
        ms = next((v for fn, v in medians.items() if fn.endswith(d.dispatch)), None)
        if ms is None and len(site_dispatches) == 1 and inputs:  # IREE dumps no benchmark for a hand-written executable
            ms = median_call_ms(art.runner("local-sync" if threads == 1 else "local-task"), inputs, repetitions * batch)
        if ms is None:
            raise RuntimeError(f"iree-benchmark-module reported no time for {d.dispatch}")
        moved = None if d.reads_bytes is None or d.writes_bytes is None else d.reads_bytes + d.writes_bytes
        out.append(DispatchTime(d.dispatch, "".join(d.steps), moved, ms, moved / copy_bytes_per_ms if moved else None))
    return out


_ALLOCATE = re.compile(r"^(\s*)%buffer = hal\.allocator\.allocate<[^\n]*\{(%\w+)\}\n", re.MULTILINE)
_FILL = """%fxs_cmd = hal.command_buffer.create device(%device : !hal.device) mode("OneShot") categories("Transfer") affinity(%queue_affinity) : !hal.command_buffer
%fxs_c0 = arith.constant 0 : index
%fxs_pattern = arith.constant 1065353216 : i32
hal.command_buffer.fill_buffer<%fxs_cmd : !hal.command_buffer> target(%buffer : !hal.buffer)[%fxs_c0, SIZE] pattern(%fxs_pattern : i32) flags("None")
hal.command_buffer.finalize<%fxs_cmd : !hal.command_buffer>
%fxs_none = util.null : !hal.fence
%fxs_fence = hal.fence.create device(%device : !hal.device) flags("None") : !hal.fence
hal.device.queue.execute<%device : !hal.device> affinity(%queue_affinity) wait(%fxs_none) signal(%fxs_fence) commands(%fxs_cmd) flags("None")
%fxs_forever = arith.constant -1 : i32
%fxs_status = hal.fence.await until([%fxs_fence]) timeout_millis(%fxs_forever) flags("None") : i32
util.status.check_ok %fxs_status, "filling the benchmark buffer failed"
"""


def _filled(benchmark: str) -> str:
    """The dumped benchmark with its buffer filled (1.0f words) once, up front. Left unwritten, the buffer's
    pages are the kernel's shared zero page, and a dispatch reading them runs from cache."""
    def fill(m: re.Match) -> str:
        return m.group(0) + "".join(f"{m.group(1)}{line}\n" for line in _FILL.replace("SIZE", m.group(2)).splitlines())

    filled, n = _ALLOCATE.subn(fill, benchmark)
    if n == 0:
        raise RuntimeError("no buffer allocation found in IREE's dispatch benchmark; its format changed")
    return filled


LARGE_BYTES = 16 << 20  # cases whose input is at least this big get the per-dispatch breakdown


def where_time_goes(rows: Sequence[dict], presets: Sequence[str]) -> list[str]:
    """Markdown: for each large case in the sweep rows, the fastest preset's dispatches timed alone, the
    bytes each moves, and the copy floor for those bytes (from the case's own `copy-floor` row)."""
    import torch

    from .cases import Case
    from .measure import compile_presets
    from .results import _by_method, _cases

    lines = []
    for label, case_rows in _cases(rows):
        m, r0 = _by_method(case_rows), case_rows[0]
        case = Case(tuple(r0["shape"]), r0["dim"], r0["dtype"], r0["threads"])
        size = math.prod(case.shape) * torch.empty((), dtype=getattr(torch, case.dtype)).element_size()
        if size < LARGE_BYTES or "copy-floor" not in m:
            continue
        x = torch.randn(case.shape).to(getattr(torch, case.dtype))  # compiled for, and run on when timed whole
        best = min((p for p in presets if p in m), key=lambda p: m[p]["median_ms"])
        art = compile_presets(case, x, (best,))[best]
        timed = time_dispatches(art, case.threads, 2 * size / m["copy-floor"]["median_ms"], inputs=[x])
        if not lines:
            lines = ["## Where the time goes: the best preset's dispatches, each timed alone", "",
                     "Each dispatch of the fastest preset, run alone by `iree-benchmark-module` on the benchmark "
                     "`iree-compile --iree-hal-dump-executable-benchmarks-to` writes (its buffer filled first), against "
                     "the copy floor: the time this case's `copy-floor` row (`y.copy_(x)`) needs to move the same bytes.", "",
                     "| case | best | module ms | dispatch | steps | MiB moved | alone ms | copy floor ms | alone / floor |",
                     "|---|---|---:|---|---|---:|---:|---:|---:|"]
        for i, d in enumerate(timed):
            head = f"| {label} | {best} | {m[best]['median_ms']:.2f} |" if i == 0 else "| | | |"
            moved = "?" if d.bytes_moved is None else f"{d.bytes_moved / 2**20:,.0f}"
            floor = "?" if d.floor_ms is None else f"{d.floor_ms:.2f} | {d.over_floor:.2f}"
            lines.append(f"{head} {d.dispatch} | {d.steps} | {moved} | {d.ms:.2f} | {floor} |")
    return lines + [""] if lines else []
