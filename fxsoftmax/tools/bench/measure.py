"""Timing one case: every IREE preset on-device, and the peers (eager, inductor, copy and exp floors)
on the same input buffer. Methods are timed round-robin (one run of each, then again) so that the
machine's drift during a case spreads over all of them; medians over `repeat` rounds after warm-up."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ...api import export
from ...backends.artifact import Artifact
from .cases import Case

WARMUP = 2


@dataclass
class Timing:
    method: str
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    max_err: float | None = None  # vs torch eager, for the softmax methods


def time_calls(fn: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds of `repeat` calls of `fn` after one warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def round_robin(methods: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Milliseconds per call of each method: WARMUP calls of each, then `repeat` rounds of one call of each.
    Each round starts one method later, so no method always follows the same one (torch's idle threads
    spin for a while after a call, which slowed whichever method came next by up to 6%)."""
    for method in methods.values():
        for _ in range(WARMUP):
            method()
    names = list(methods)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            methods[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def compile_presets(case: Case, x: torch.Tensor, presets: tuple[str, ...]) -> dict[str, Artifact]:
    """One IREE CPU module per preset for the case's shape (thread count is a run-time choice)."""
    model = torch.nn.Softmax(dim=case.dim)
    return {p: export(model, (x,), policy=p, device="cpu") for p in presets}


def time_case(case: Case, x: torch.Tensor, arts: dict[str, Artifact], repeat: int, with_inductor: bool) -> list[Timing]:
    """Every method on `x` with `case.threads` threads."""
    torch.set_num_threads(case.threads)
    want = torch.softmax(x, case.dim)
    y = torch.empty_like(x)
    methods: dict[str, Callable[[], object]] = {}
    errors: dict[str, float] = {}
    placed = None
    for name, art in arts.items():
        # on-device: the input is placed once (the modules share the device); each call returns when
        # its results are ready
        runner = art.runner("local-sync" if case.threads == 1 else "local-task")
        placed = placed or [runner.put(x)]
        errors[name] = (runner.fetch(runner.invoke(placed)[0]).float() - want.float()).abs().max().item()
        methods[name] = lambda r=runner, p=placed: r.invoke(p)
    methods["eager"] = lambda: torch.softmax(x, case.dim)
    # eager's kernel writing into a preallocated output: eager without its per-call allocation
    methods["eager-out"] = lambda: torch.ops.aten._softmax.out(x, case.dim, False, out=y)
    errors["eager"] = errors["eager-out"] = 0.0
    if with_inductor:
        torch._dynamo.reset()  # inductor bakes the thread count into its kernels
        compiled = torch.compile(lambda t: torch.softmax(t, case.dim), backend="inductor")
        errors["inductor"] = (compiled(x).float() - want.float()).abs().max().item()
        methods["inductor"] = lambda: compiled(x)
    methods["copy-floor"] = lambda: y.copy_(x)
    methods["exp-floor"] = lambda: torch.exp(x, out=y)

    times = round_robin(methods, repeat)
    if arts:  # give the buffers IREE's caching allocator kept for this case back before the next one
        next(iter(arts.values())).runner("local-sync" if case.threads == 1 else "local-task").device.allocator.trim()
    return [
        Timing(m, statistics.median(ts), min(ts), max(ts), len(ts), errors.get(m)) for m, ts in times.items()
    ]
