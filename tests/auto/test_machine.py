"""The machine constants of `auto`'s cost model: measured with IREE on this CPU in seconds, cached per machine."""

from __future__ import annotations

import os
import time

import pytest

from fxsoftmax.auto import machine
from fxsoftmax.backends.runtime import physical_cores

pytestmark = pytest.mark.iree


def test_measured_in_seconds_then_read_from_the_cache(tmp_path):
    start = time.perf_counter()
    c = machine.constants(str(tmp_path))
    assert time.perf_counter() - start < 60 and 0 < c.seconds_to_measure < 60
    name = os.path.basename(machine.cache_path(str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == [name, f"{name}.lock"]  # no half-written file left
    assert set(c.by_threads) == {1, physical_cores()}
    for k in c.by_threads.values():
        assert all(v > 0 for v in (*k.read_ns_per_byte.values(), k.columns_read_ns_per_byte, k.call_us))
        assert set(k.exp_ns_per_element) == set(k.pass_ns_per_element) == {"float32", "bfloat16"}
        assert all(k.exp_ns_per_element[d] > 0 and k.pass_ns_per_element[d] > 0 for d in k.exp_ns_per_element)
        # inplace's kernel in bf16 against f32: the difference is its rounding to bf16 as it writes
        assert k.narrow_write_ns_per_element["float32"] == 0 < k.narrow_write_ns_per_element["bfloat16"]
    # memory beyond the caches costs more per byte than a pass over data in cache
    one = c.at(1)
    assert one.read_ns_per_byte["large"] * 4 > one.pass_ns_per_element["float32"]
    start = time.perf_counter()
    assert machine.constants(str(tmp_path)) == c and time.perf_counter() - start < 1


def test_processes_starting_together_measure_once(tmp_path):
    """Two processes asking at once: one measures, the other waits and reads its file."""
    import subprocess
    import sys

    code = f"from fxsoftmax.auto import machine; print(repr(machine.constants({str(tmp_path)!r}).at(1).read_ns_per_byte['large']))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]  # the same measurement, read twice


def test_between_measured_thread_counts_costs_are_interpolated():
    k = machine.Threads({"mid": 1.0, "large": 2.0}, {"mid": 1.0, "large": 2.0}, 1.0, {"float32": 1.0}, {"float32": 4.0}, 10.0, 20.0, {"float32": 0.0})
    half = machine.Threads({"mid": 0.5, "large": 1.0}, {"mid": 0.5, "large": 1.0}, 0.5, {"float32": 0.5}, {"float32": 2.0}, 20.0, 40.0, {"float32": 0.0})
    c = machine.Constants("test", 5, 1 << 20, 16, {1: k, 5: half})
    assert c.at(3).exp_ns_per_element["float32"] == 3.0 and c.at(9) == half and c.at(1) == k
    # the 8 MiB probe's cost up to 16 MiB, the 256 MiB probe's from 512 MiB
    assert c.memory_ns_per_byte(1, 1 << 20) == (1.0, 1.0) and c.memory_ns_per_byte(1, 1 << 30) == (2.0, 2.0)
    assert 1.0 < c.memory_ns_per_byte(1, 64 << 20)[0] < 2.0
