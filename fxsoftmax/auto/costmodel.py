"""The cost model of `auto` on CPU: each candidate plan's time from what its dispatches move and compute
(bytes read and written per dispatch, whether a row's working set stays in cache, exps per element, passes,
dispatches, rows per thread) and this machine's constants (fxsoftmax.auto.machine)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import steps
from ..core.dtypes import dtype
from ..core.policy import Plan
from . import machine


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
        return [DispatchWork(reductions=2, passes=3, reads=("x",), writes=("y",), exps=steps.FUSED_EXPS)]
    if plan.in_output:  # max, exp into y while summing, scale y in place
        return [DispatchWork(reductions=2, passes=3, reads=("x",), writes=("y",), exps=1)]
    stored = set(plan.stored())
    work = []
    for group in plan.groups:
        keys = {steps.key(t) for t in group}
        online = steps.ONLINE in keys
        reductions = 1 if online else len(keys & {"1", "3"})
        ends_with_a_reduction = steps.key(group[-1]) in ("1", "3", steps.ONLINE)
        reads = ("x",) * ("x" in steps.outside_reads(group)) + ("z",) * ("z" in steps.outside_reads(group))
        writes = ("z",) * ("2" in group and 2 in stored) + ("y",) * ("4" in keys)
        work.append(DispatchWork(reductions, reductions + (0 if ends_with_a_reduction else 1), reads, writes,
                                 steps.group_exps(keys), online))
    return work


def predict_ms(plan: Plan, rows: int, row: int, innermost: bool, dtype_name: str, threads: int, constants: machine.Constants) -> float:
    """Predicted milliseconds of one call of `plan` on a [rows, row] softmax."""
    return sum(predict_dispatches_ms(plan, rows, row, innermost, dtype_name, threads, constants)) + constants.at(threads).call_us * 1e-3


def predict_dispatches_ms(plan: Plan, rows: int, row: int, innermost: bool, dtype_name: str, threads: int,
                          constants: machine.Constants) -> list[float]:
    """Predicted milliseconds of each of the plan's dispatches. x and y are `dtype`; a stored z is in the
    compute dtype (float32 for 16-bit floats)."""
    elements = rows * row
    size = dtype(dtype_name).bytes
    nbytes = {"x": size * elements, "y": size * elements, "z": max(size, 4) * elements}
    dtype_name = dtype_name if dtype_name in machine.DTYPES else "float32"
    work = dispatch_work(plan)
    footprint = nbytes["x"] + sum(nbytes[t] for w in work for t in w.writes)
    # whole rows per thread: with fewer rows than threads even an elementwise dispatch gains nothing, as the
    # reductions before it left the rows in their cores' caches (1x1048576 bf16 here: per-step 0.786 ms with
    # 1 thread, 0.80 with 2; remat 0.969 and 0.996)
    used = min(threads, rows)
    k = constants.at(used)
    per_pass = k.pass_ns_per_element[dtype_name] * elements
    read, write = constants.memory_ns_per_byte(used, footprint)
    in_cache = footprint <= constants.l2_bytes * used  # everything stays in L2
    dispatch_ns = constants.at(threads).dispatch_us * 1e3  # the executor's cost, all its threads
    times = []
    for w in work:
        # a reduction along an outer dim reads x (dtype) or a stored z (f32) across rows: its cost per element
        # was measured per dtype (a bf16 column costs about what an f32 one does), scaled like a row's read
        # from the footprint's place in the memory hierarchy
        reduce_read = {t: read if innermost else read * k.columns_read_ns_per_element[dtype_name if t == "x" else "float32"]
                       / (k.read_ns_per_byte["mid"] * nbytes[t] / elements) for t in w.reads}
        read_ns = sum(nbytes[t] * (reduce_read[t] if w.reductions else read) for t in w.reads)
        write_bytes = sum(nbytes[t] for t in w.writes)
        if in_cache:
            memory, rereads = (len(w.reads) + len(w.writes)) * per_pass, 0.0
        else:
            memory = read_ns + write_bytes * write
            row_stays = innermost and (sum(nbytes[t] for t in w.reads) + write_bytes) // rows <= constants.l2_bytes // 2
            rereads = 0.0 if row_stays else (w.passes - 1) * sum(nbytes[t] * reduce_read[t] for t in w.reads)
        exps = w.exps * elements * k.exp_ns_per_element[dtype_name] * (constants.vector_lanes_f32 if w.scalar else 1)
        # a full-size result in a 16-bit dtype is rounded from f32 once per element (`inplace`: z, then y)
        narrow_writes = sum(nbytes[t] < 4 * elements for t in w.writes) * (2 if plan.in_output else 1)
        compute = w.passes * per_pass + exps + narrow_writes * k.narrow_write_ns_per_element[dtype_name] * elements
        if plan.in_output:  # it prefetches, so its traffic and compute overlap; each row costs a little more
            memory, compute = 0.0, max(memory, compute) + rows * k.in_output_row_ns
        if not innermost and not w.reductions and w.exps and "x" in w.reads:  # exp(x - m) over an outer dim, measured
            memory, rereads, compute = 0.0, 0.0, elements * k.outer_exp_ns_per_element[dtype_name] * read / k.read_ns_per_byte["mid"]
        times.append((memory + rereads + compute + dispatch_ns) * 1e-6)
    return times
