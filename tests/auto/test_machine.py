"""The machine constants of `auto`'s cost model: measured with IREE on this CPU, cached per machine, and
right (or known not to be) when the first use runs beside other work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fxsoftmax.auto import machine
from fxsoftmax.backends.runtime import physical_cores

pytestmark = pytest.mark.iree


def test_measured_then_read_from_the_cache(tmp_path, monkeypatch):
    c = machine.constants(str(tmp_path))
    name = os.path.basename(machine.cache_path(str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == [name, f"{name}.lock"]  # no half-written file left
    assert set(c.by_threads) == {1, physical_cores()}
    for k in c.by_threads.values():
        assert all(v > 0 for v in (*k.read_ns_per_byte.values(), *k.columns_read_ns_per_element.values(), k.call_us))
        assert set(k.exp_ns_per_element) == set(k.pass_ns_per_element) == {"float32", "bfloat16"}
        assert all(k.exp_ns_per_element[d] > 0 and k.pass_ns_per_element[d] > 0 for d in k.exp_ns_per_element)
        # inplace's kernel in bf16 against f32: the difference is its rounding to bf16 as it writes
        assert k.narrow_write_ns_per_element["float32"] == 0 < k.narrow_write_ns_per_element["bfloat16"]
        # the same kernel on the same elements in short rows: each row costs something
        assert k.in_output_row_ns > 0
    if c.trusted:  # read back as it was, without measuring
        monkeypatch.setattr(machine, "measure", lambda: pytest.fail("measured again"))
        assert machine.constants(str(tmp_path)) == c


def test_processes_starting_together_measure_once(tmp_path):
    """Two processes asking at once: one measures, the other waits and reads its file."""
    code = f"from fxsoftmax.auto import machine; print(repr(machine.constants({str(tmp_path)!r}).at(1).read_ns_per_byte['large']))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]  # the same measurement, read twice


def test_checks_catch_inconsistent_constants():
    k = machine.Threads({"mid": 1.0, "large": 2.0}, {"mid": 1.0, "large": 2.0}, {"float32": 1.0, "bfloat16": 1.0}, {"float32": 0.5, "bfloat16": 0.5},
                        {"float32": 4.0, "bfloat16": 4.0}, 10.0, 20.0, {"float32": 0.0, "bfloat16": 1.0}, {"float32": 1.0, "bfloat16": 1.0}, 20.0)
    slow_all = machine.Threads(**{**k.__dict__, "exp_ns_per_element": {"float32": 9.0, "bfloat16": 4.0}})
    assert machine.check({1: k, 2: k}, 2) == []
    assert machine.check({1: k, 2: slow_all}, 2) == ["all cores slower per element than one (exp float32: 9 > 4)"]
    slow_outer = machine.Threads(**{**k.__dict__, "outer_exp_ns_per_element": {"float32": 1.0, "bfloat16": 3.0}})
    assert machine.check({1: k, 2: slow_outer}, 2) == ["all cores slower per element than one (exp over an outer dim bfloat16: 3 > 1)"]
    cached_slower = machine.Threads(**{**k.__dict__, "read_ns_per_byte": {"mid": 3.0, "large": 2.0}})
    assert machine.check({1: cached_slower}, 1) == ["data in the last-level cache read slower than from memory with 1 thread(s)"]


def test_between_measured_thread_counts_costs_are_interpolated():
    k = machine.Threads({"mid": 1.0, "large": 2.0}, {"mid": 1.0, "large": 2.0}, {"float32": 1.0}, {"float32": 1.0}, {"float32": 4.0}, 10.0, 20.0,
                        {"float32": 0.0}, {"float32": 2.0}, 20.0)
    half = machine.Threads({"mid": 0.5, "large": 1.0}, {"mid": 0.5, "large": 1.0}, {"float32": 0.5}, {"float32": 0.5}, {"float32": 2.0}, 20.0, 40.0,
                           {"float32": 0.0}, {"float32": 1.0}, 10.0)
    c = machine.Constants("test", 5, 1 << 20, 16, {1: k, 5: half})
    assert c.at(3).exp_ns_per_element["float32"] == 3.0 and c.at(3).in_output_row_ns == 15.0
    assert c.at(9) == half and c.at(1) == k
    # the 8 MiB probe's cost up to 16 MiB, the 256 MiB probe's from 512 MiB
    assert c.memory_ns_per_byte(1, 1 << 20) == (1.0, 1.0) and c.memory_ns_per_byte(1, 1 << 30) == (2.0, 2.0)
    assert 1.0 < c.memory_ns_per_byte(1, 64 << 20)[0] < 2.0


WORK = {  # the constants measured directly as work (not a call's latency), and how to read them
    "exp": lambda k: k.exp_ns_per_element["float32"], "exp bf16": lambda k: k.exp_ns_per_element["bfloat16"],
    "pass": lambda k: k.pass_ns_per_element["float32"], "read": lambda k: k.read_ns_per_byte["large"],
    "read 8 MiB": lambda k: k.read_ns_per_byte["mid"],
    "columns": lambda k: k.columns_read_ns_per_element["float32"], "columns bf16": lambda k: k.columns_read_ns_per_element["bfloat16"],
}
# Not checked here: differences of two probes (write: stream - read; bf16 rounding: a kernel in bf16 less the
# same in f32) and the outer-dim exp. On the Zen 4 (2026-11-30) two quiet measurements of them disagreed by
# 0.37-2.6x, and loaded ones by 0.07-3.3x.
# Stated: constants measured directly, with every core loaded or quiet again, land within this factor of a quiet
# measurement (0.65-1.77 seen). Quiet ones alone disagree by more on the Zen 4 VM, whose last-level cache and
# cores other tenants share: up to 1.9x (the 8 MiB read with 2 threads) in 10 quiet timings on IREE 3.13, and
# 2.24x (the bf16 column read with 2 threads) between two quiet measurements 20 s apart in a CI run (stop 25),
# where a loaded one also once came out 3.2x the quiet one before it. So each is held to any of the quiet
# measurements around it: the one before and the one after.
FACTOR = 2.0


def _assert_near(quiets, got):
    """Each constant of `got` within FACTOR of the same constant in one of the quiet measurements."""
    for threads in got.by_threads:
        for name, read in WORK.items():
            ratios = [read(got.at(threads)) / read(q.at(threads)) for q in quiets]
            assert any(1 / FACTOR <= r <= FACTOR for r in ratios), (name, threads, ratios)


@pytest.mark.serial
def test_a_first_use_beside_other_work_is_noticed_and_lands_near_a_quiet_one(tmp_path):
    """Every core loaded by another process during the first use: the constants measured directly land within
    FACTOR of a quiet measurement, are marked provisional (the reason line says why), and the next quiet use
    measures again, landing within FACTOR of a quiet measurement before or after it."""
    quiet = machine.constants(str(tmp_path / "quiet"))
    assert quiet.trusted, (quiet.load, quiet.violations)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        busy = machine.constants(str(tmp_path / "busy"))
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert busy.load > machine.BUSY and not busy.trusted
    assert machine.describe_quality(busy).startswith(f"machine constants provisional: they were taken while other processes used {busy.load:.0%}")
    again = machine.constants(str(tmp_path / "busy"))
    assert again.trusted and again.note.startswith("measured again: the cached constants were taken while other processes used")
    after = machine.constants(str(tmp_path / "after"))
    assert after.load <= machine.BUSY  # quiet: a reference, whatever its own checks say
    _assert_near([quiet, after], again)
    _assert_near([quiet, again, after], busy)
