"""Running the cases: compile once per shape, then time every method per thread count."""

from __future__ import annotations

import sys
from typing import Sequence

import torch

from ...report.inspect import inspect
from .cases import PRESETS, Case
from .measure import compile_presets, time_case


class _Bar:
    """A one-line progress bar on stderr (silent when quiet)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.done, self.quiet = total, 0, quiet

    def step(self, what: str) -> None:
        self.done += 1
        if not self.quiet:
            filled = int(30 * self.done / self.total)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {what:<60.60}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.quiet:
            print(file=sys.stderr)


def run_sweep(
    cases: Sequence[Case], *, repeat: int = 7, presets: Sequence[str] = PRESETS, inductor: bool = True,
    stack: bool = False, quiet: bool = False,
) -> list[dict]:
    """One row per (case, method): median/min/max ms and max error vs eager."""
    by_shape: dict[tuple, list[Case]] = {}
    for c in cases:
        by_shape.setdefault((c.shape, c.dim, c.dtype), []).append(c)
    bar = _Bar(sum(len(cs) for cs in by_shape.values()) + len(by_shape), quiet)
    rows: list[dict] = []
    for (shape, dim, dtype), group in by_shape.items():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(getattr(torch, dtype))
        taken = tuple(p for p in presets if p in group[0].presets)
        bar.step(f"compiling {group[0].size} {dtype}: {', '.join(taken)}")
        arts = compile_presets(group[0], x, taken)
        stacks = {p: _max_stack(a) for p, a in arts.items()} if stack else {}
        for case in group:
            bar.step(case.label)
            for t in time_case(case, x, arts, repeat, inductor):
                rows.append({**case.as_dict(), **t.__dict__, "stack_bytes": stacks.get(t.method)})
        del arts, x
    bar.close()
    torch.set_num_threads(max(c.threads for c in cases))
    return rows


def _max_stack(art) -> int | None:
    values = [d.stack_bytes for s in inspect(art).sites for d in s.dispatches]
    return None if any(v is None for v in values) else max(values, default=0)
