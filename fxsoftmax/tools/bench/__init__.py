"""The benchmark: every preset against torch eager, inductor, IREE's own softmax and two floors."""

from __future__ import annotations

import json
import os

from ...auto.chooser import USER, AutoChooser, load_calibration
from ...auto.machine import cache_path
from ...auto.machine import describe as machine
from .cases import PRESETS, Case, cases
from .dispatches import where_time_goes
from .results import auto_rows, calibration, markdown, plots, write_tables
from .sweep import run_sweep

KINDS = ("quick", "full", "calibrate", "case")


def run_bench(kind: str = "quick", out: str = "bench-out", *, repeat: int = 7, inductor: bool = True,
              calibration_out: str | None = None, quiet: bool = False, case: Case | None = None) -> str:
    """Run a sweep, write results.csv/json, report.md and plots into `out`; return the Markdown report.
    kind "calibrate" also writes the calibration `auto` uses (default: this machine's user file); kind
    "case" times the one `case`."""
    if kind not in KINDS:
        raise ValueError(f"unknown benchmark kind {kind!r}; accepted: {', '.join(KINDS)}")
    if (kind == "case") != (case is not None):
        raise ValueError("kind 'case' and a case go together")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    info = machine()
    # the calibration only needs the presets: inductor's C++ compile would add minutes for nothing
    rows = run_sweep([case] if case else cases(kind), repeat=repeat, inductor=inductor and kind != "calibrate", stack=kind != "quick", quiet=quiet)
    write_tables(rows, out)
    notes = []
    if kind == "calibrate":
        target = calibration_out or USER
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as f:
            json.dump(calibration(rows, info), f, indent=1)
        notes.append(f"calibration written to {target}")
    if kind == "calibrate":
        cal = load_calibration(calibration_out or USER)
        autos = auto_rows(rows, lambda t: AutoChooser("cpu", t, calibration=cal))
        notes.append(f"`auto` decisions use {cal['path']} (made {cal.get('created', '?')})")
    else:  # what `auto` does on this machine: the cost model, or this machine's calibration if one exists
        choosers: dict[int, AutoChooser] = {}
        autos = auto_rows(rows, lambda t: choosers.setdefault(t, AutoChooser("cpu", t)))
        used = next(iter(choosers.values()))
        notes.append(f"`auto` decisions use {used.calibration['path']} (nearest calibrated case)" if used.calibration
                     else f"`auto` decisions use the cost model, with this machine's constants from {cache_path()}")
    files = plots(rows, out)
    text = markdown(rows, info, autos, files, title=case.label if case else f"{kind} sweep")
    text += "\n" + "\n".join([*(where_time_goes(rows, PRESETS) if kind != "calibrate" else []), *(f"- {n}" for n in notes)]) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    return text
