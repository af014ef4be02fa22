"""Timing one case: every IREE preset on-device, and the peers (eager, inductor, copy and exp floors)
on the same input buffer. Medians over `repeat` runs after warm-up; min and max kept."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..backends.export import Artifact, export
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

    @classmethod
    def of(cls, method: str, times: list[float], err: float | None = None) -> "Timing":
        return cls(method, statistics.median(times), min(times), max(times), len(times), err)


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def compile_presets(case: Case, x: torch.Tensor, presets: tuple[str, ...]) -> dict[str, Artifact]:
    """One IREE CPU module per preset for the case's shape (thread count is a run-time choice)."""
    model = torch.nn.Softmax(dim=case.dim)
    return {p: export(model, (x,), policy=p, device="cpu") for p in presets}


def time_iree(case: Case, x: torch.Tensor, art: Artifact, method: str, want: torch.Tensor, repeat: int) -> Timing:
    """On-device time: the input is placed once; each call returns when its results are ready."""
    runner = art.runner("local-sync" if case.threads == 1 else "local-task")
    placed = runner.put(x)
    err = (runner.fetch(runner.invoke([placed])[0]).float() - want.float()).abs().max().item()
    return Timing.of(method, _timed(lambda: runner.invoke([placed]), repeat), err)


def time_torch(case: Case, x: torch.Tensor, repeat: int, with_inductor: bool) -> tuple[list[Timing], torch.Tensor]:
    torch.set_num_threads(case.threads)
    want = torch.softmax(x, case.dim)
    out = [Timing.of("eager", _timed(lambda: torch.softmax(x, case.dim), repeat), 0.0)]
    if with_inductor:
        torch._dynamo.reset()  # inductor bakes the thread count into its kernels
        fn = torch.compile(lambda t: torch.softmax(t, case.dim), backend="inductor")
        err = (fn(x).float() - want.float()).abs().max().item()
        out.append(Timing.of("inductor", _timed(lambda: fn(x), repeat), err))
    y = torch.empty_like(x)
    out.append(Timing.of("copy-floor", _timed(lambda: y.copy_(x), repeat)))
    out.append(Timing.of("exp-floor", _timed(lambda: torch.exp(x, out=y), repeat)))
    return out, want
