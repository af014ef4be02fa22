"""Every IREE behaviour fxsoftmax works around, in one place: the behaviour, its evidence, and the
decision it makes. The pass, the group lowering and the targets read these decisions; nothing else
knows about IREE's quirks.

Each workaround names the IREE versions measured to need it and applies only where the installed IREE
is one of them (versions between two measured ones are treated as needing it).
"""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import version
from typing import Iterable

IREE = tuple(int(p) for p in version("iree-base-compiler").split(".")[:2])


def needed(fixed_in: tuple[int, int] | None) -> bool:
    """Whether the installed IREE needs a workaround first unnecessary in `fixed_in` (None: in no release tested)."""
    return fixed_in is None or IREE < fixed_in

# Masked max reductions. MLIR lowers a *masked* `arith.maximumf` vector reduction with the smallest
# negative denormal as the neutral value, not -inf, so with IREE's default (masking) CPU vectorization
# the max of a row whose length is not a multiple of the vector width comes out as ~0 for all-negative
# rows, and softmax is NaN once the row lies below ~-87 (llvm-project #222275, fixed Sept 2026, in no
# IREE release we use). `arith.maxnumf` takes another lowering and is right.
# Evidence: tests/backends/test_iree_cpu.py::test_cpu_runtime_edge_rows (every preset, rows of 33).
# Decision: the groups fxsoftmax emits take the max with maxnumf (NaN rows still give NaN: exp of a
# NaN propagates through the sum).
MAX_OP = "arith.maxnumf"

# IREE's own softmax (left in place by `fused`) takes the max with maximumf, so the same bug hits it.
# Decision: a module that keeps an IREE softmax peels vectorization remainders instead of masking,
# which computes that max right. The flag is module-wide, so it is passed only to modules that keep an
# IREE softmax. Evidence: test_cpu_runtime_edge_rows[fused]; its cost to the rest of a real model is
# measured by `fxsoftmax bench --model` (README).
PEEL_FLAG = "--iree-llvmcpu-vector-pproc-strategy=peel"


PEEL_FIXED_IN = None  # needed on 3.9 and 3.13 (the LLVM fix is in neither)

# The same flag changes how IREE 3.13 tiles CPU matmuls: with it a batch_matmul gets cache-level tiles and
# 8x32 vector tiles, without it no cache tiles and 8x16. At Llama width that made every plan but `fused`
# (the only one that got the flag) lose at model level. A block of q projection, masked scores, softmax, PV
# and output projection ([1,32,2048,2048] scores, 2 threads): `inplace` 796 ms, `inplace` with the flag
# 604, `fused` 622; `split` 820, with the flag 685. On 3.9 the flag changes nothing measurable there
# (`inplace` 593 and 601, `split` 680 and 657). Evidence: docs/benchmark.md (auto against fused on 3.13).
# Decision: on 3.13 every CPU module peels; 3.10-3.12 are untested and kept as 3.9.
PEEL_FOR_MATMULS_SINCE = (3, 13)


# IREE 3.11 made `--iree-opt-level` default to O0, which turns off reassociation of float reductions
# (`--iree-llvmcpu-reassociate-fp-reductions`). On CPU every preset got slower: 4096x16384 f32, 1 thread,
# IREE 3.13 against 3.9: `fused` 1.93x the time, `split` 1.21x. Turning that one flag back on recovers
# everything O2 does for the softmax (3.13, 1 thread: `fused` 81.8 ms with it, 81.3 with O2, 159.0 without).
# O2 itself also turns on module-wide aggressive fusion, which breaks a BERT-base-width layer (a LayerNorm
# dispatch needs 73,856 B of stack, over IREE's 32 KiB limit). Evidence: docs/results/versions.md,
# tests/models/test_real_width.py in `make test-iree`. Decision: CPU modules get the reassociation flag where the
# default is O0, and nothing else of O2.
OPT_LEVEL_O0_DEFAULT_SINCE = (3, 11)
REASSOCIATE_FLAG = "--iree-llvmcpu-reassociate-fp-reductions=true"


# IREE's CPU runtime after 3.9 keeps no freed buffers for reuse: 3.9's caching allocator (what fxsoftmax asks
# for, and `--device_allocator=caching` in IREE's tools) is gone from 3.13, so every call's results and
# transients are fresh pages the kernel faults in. 4096x16384 f32 `split`, 2 threads, IREE 3.13: 131,074
# minor page faults and 156 ms per call (the 256 MiB result and the 256 MiB z), against 0 faults and 40 ms
# on 3.9; whole models pay it on every activation. 3.13 lets the caller provide both: transients in one
# buffer appended to the arguments (`--iree-torch-externalize-transients`), results in storage passed as
# mutable arguments (the module's output-storage entry point, fxsoftmax.backends.entry). With both, 3.13
# took 40.6 ms and 0 faults. Evidence: tests/backends/test_runtime.py (page faults per call), docs/results/versions.md.
# Decision: on such an IREE, CPU modules externalize their transients; the runner keeps one buffer for them
# and reuses result storage the caller no longer holds.
RUNTIME_CACHES_BUFFERS_UNTIL = (3, 10)  # 3.9 measured to cache, 3.13 not to; between: treated as not caching

# Writing a result into caller storage (IREE's output storage, `hal.tensor.alias`) aborts the call in IREE
# 3.9 ("ABORTED; while invoking native function hal.fence.await") when the result is also read by other ops
# or is a view of another value: a model returning `h` and `softmax(h)`, or a slice of `h`, and every
# Hugging Face encoder returning last_hidden_state beside the pooler output made from it; also when the result
# is computed from constants alone (no input). A result read by nothing else is written in place. IREE 3.13
# runs all of them. Evidence: tests/backends/test_runtime.py, test_rewrites.py::test_scatter_value_at_topk_indices.
# Decision: on 3.9 only results computed from an input and read by nothing else go into caller storage; the others come back as IREE
# allocates them (its caching allocator reuses their memory), and `out=` copies them in.
SOLE_USE_OUTPUT_STORAGE_FIXED_IN = (3, 13)

# IREE (3.9 and 3.13) computes a scatter-like op (scatter, scatter_add, index_put, index_add, slice_scatter, ...)
# in the buffer of its destination operand, and when that operand is a module argument, or made from one by
# ops IREE fuses into the scatter, that buffer is the caller's: fxsoftmax hands inputs over without copying,
# so the user's input tensor was overwritten with the result (`z.scatter_add(1, i, ones)`: z changed, the
# result right). On 3.9, writing such a result into caller storage also aborts the call ("ABORTED; while
# invoking native function hal.fence.await"). Evidence: tests/backends/test_runtime.py::test_scatter_into_an_input.
# Decision: an input that a scatter-like op may write into is copied for the call; on 3.9 the result of
# such an op does not go into caller storage.
SCATTER_INTO_STORAGE_FIXED_IN = (3, 13)


def writes_into_operand(op_name: str) -> bool:
    """Whether IREE computes the op (an ATen op name, e.g. "aten.scatter_add.default") in its first operand's buffer."""
    name = op_name.split(".")[1] if op_name.startswith("aten.") else ""
    return "scatter" in name or name.rstrip("_") in ("index_put", "_unsafe_index_put", "index_add", "index_copy", "index_fill")


# IREE 3.13 cannot compile a module that takes its transients from the caller, writes results into caller
# storage and updates state in place (a decode step's KV cache): "'stream.resource.subview' op using value
# defined outside the region". Any two of the three compile. Evidence: tests/models/test_decode.py on 3.13.
# Decision: a program that updates state in place gets no output-storage entry point where transients are
# external (its results, logits, are small next to the state it keeps).
def output_storage_with_state(updates_state: bool) -> bool:
    return not (updates_state and needs_external_transients())
EXTERNAL_TRANSIENTS_FLAG = "--iree-torch-externalize-transients"


@functools.cache
def needs_external_transients() -> bool:
    """Whether CPU modules should take their transient memory from the caller on this IREE (and it can)."""
    if IREE < RUNTIME_CACHES_BUFFERS_UNTIL:
        return False
    from iree.compiler.tools.binaries import find_tool

    listed = subprocess.run([find_tool("iree-compile"), "--help-hidden"], capture_output=True, text=True).stdout
    return EXTERNAL_TRANSIENTS_FLAG.lstrip("-") in listed


def cpu_module_flags(site_statuses: Iterable[str]) -> list[str]:
    """Flags a CPU module needs on this IREE because of the sites it holds ("fused", "rewritten", ...)."""
    opt = [REASSOCIATE_FLAG] if IREE >= OPT_LEVEL_O0_DEFAULT_SINCE else []
    peel = IREE >= PEEL_FOR_MATMULS_SINCE or (needed(PEEL_FIXED_IN) and "fused" in set(site_statuses))
    return opt + ([PEEL_FLAG] if peel else [])


def reciprocal(sum_group: int, scale_group: int) -> bool:
    """Whether l crosses to step 4 as 1/l (made once per row) so that step 4 multiplies.

    Not an IREE bug but an IREE behaviour: within one dispatch IREE fuses 1/l into the per-element
    multiply (a divide per element again, ~8x a multiply), so only a group boundary keeps it per row.
    """
    return sum_group != scale_group


def may_pull_producers(later_groups_read_x: bool) -> bool:
    """Whether elementwise producers of x may be pulled into the first group: only when no later group
    reads x again (else x must be stored anyway, and IREE fuses the producers into x's own dispatch)."""
    return not later_groups_read_x


# A dispatch that writes both z = exp(x - m) and its sum l, when the softmax dim is dynamic, dies with
# SIGBUS at run time (IREE 3.9 CPU; the module IREE 3.13 builds runs). Measured for `123|4` and `1|23|4`
# with every combination of dynamic dims that includes the softmax dim; a dynamic batch dim alone, and
# groups writing z or l alone, run right. IREE 3.13 runs it. Evidence: tests/backends/test_iree_cpu.py::test_dynamic_softmax_dim_*.
# Decision: export refuses such a plan for such a site, naming it and what is accepted.
STORE_Z_AND_SUM_FIXED_IN = (3, 13)


def refuse_group(outputs: tuple[str, ...], dynamic_softmax_dim: bool) -> str | None:
    """Why IREE cannot run a group writing `outputs`, or None if it can."""
    if needed(STORE_Z_AND_SUM_FIXED_IN) and dynamic_softmax_dim and {"z", "l"} <= set(outputs):
        return (
            "IREE 3.9 crashes (SIGBUS) at run time on a dispatch that stores both exp(x - m) and its sum "
            "when the softmax dim is dynamic; accepted for a dynamic softmax dim: plans whose groups store "
            "at most one of steps 2 and 3 (fused, remat, split, per-step, online, auto), or a static softmax dim"
        )
    return None


# float64: IREE demotes f64 to f32 by default (--iree-input-demote-f64-to-f32), the module's own inputs
# and outputs included, so f64 tensors handed to it are read as f32 bytes (NaN or garbage, measured for
# every policy incl. `fused`); without the demotion IREE 3.9's CPU backend has no f64 `exp`
# ("iree-lld: error: undefined symbol: exp"); IREE 3.13 fails too ("buffer view byte length 192 exceeds
# backing buffer byte length 96"). Evidence: tests/backends/test_iree_cpu.py::test_float64_is_refused.
# Decision: export refuses a model whose inputs or outputs are float64, saying what is accepted.
def refuse_dtypes(dtypes) -> str | None:
    """Why IREE cannot run a module with inputs/outputs of `dtypes`, or None if it can."""
    import torch

    if torch.float64 in set(dtypes):
        return (
            "IREE cannot run float64 (it demotes f64 to f32, module inputs and outputs included, and has no "
            "f64 exp on CPU in 3.9); accepted: float32, float16 and bfloat16 inputs and outputs (e.g. model.float())"
        )
    return None


# IREE's bf16 emulation on CPU folds `arith.extf(arith.truncf(x : f32) : bf16)` back to x: the truncf is
# gone by the LLVM dialect (`--compile-to=executable-targets`), so softmax(x_f32, dtype=bfloat16), which
# casts x to bf16 first, computed from the unrounded x, 30 bf16 ulps from eager (3.9 and 3.13, every plan
# made of fxsoftmax's groups; IREE's own `fused` rounds). Evidence: tests/backends/test_iree_cpu.py::test_a_cast_to_bfloat16_before_softmax_rounds_x.
# Decision: a group rounds x to bf16 with integer ops (group_mlir.cast_through), which IREE keeps.
BF16_ROUND_TRIP_FIXED_IN = None


# iree-turbine 3.9 inlines a weight through numpy, which has no bfloat16 ("Got unsupported ScalarType
# BFloat16" from exported_program.py's _lift_tensor_to_global). Evidence: tests/models/test_zoo.py bf16 decoders.
# Decision: a model with bf16 parameters keeps them outside the MLIR (an IREE parameter archive).
def must_externalize(parameter_dtypes) -> bool:
    import torch

    return torch.bfloat16 in set(parameter_dtypes)


# iree-turbine makes a buffer the model updates in place (a KV cache's write position, e.g. transformers'
# StaticCache `cumulative_length`) a mutable global; with IREE 3.9's MLIR bindings, inlining its value kills
# Python with a segmentation fault when the buffer is 0-d (DenseResourceElementsAttr.get_from_buffer on a
# 0-d array, turbine's ir_utils.py create_tensor_global). Read-only 0-d buffers are inlined another way
# and are fine; IREE 3.13's bindings inline it. Evidence: tests/models/test_decode.py (every decode step holds one).
# Decision: such a buffer is kept outside the MLIR (a named parameter, scope "model").
ZERO_D_STATE_FIXED_IN = (3, 13)


def must_externalize_buffer(shape: tuple, updated_in_place: bool) -> bool:
    return needed(ZERO_D_STATE_FIXED_IN) and updated_in_place and len(shape) == 0


# A cumsum along a dynamic dim next to an int64 -> int32 truncation (its input truncated, or its int64
# result truncated after it) dies with SIGBUS in IREE 3.9's CPU module. RoBERTa and XLM-RoBERTa
# position ids do exactly this (`cumsum(ids.ne(pad).int(), 1).type_as(mask)`). Measured: the same cumsum
# without a truncation, or over a static dim, runs right; IREE 3.13 runs it. Evidence:
# tests/backends/test_iree_cpu.py::test_cumsum_*. Decision: export refuses it, naming the case and what is accepted.
CUMSUM_FIXED_IN = (3, 13)


def refuse_cumsum(dynamic_dim: bool, next_to_int32_truncation: bool) -> str | None:
    if needed(CUMSUM_FIXED_IN) and dynamic_dim and next_to_int32_truncation:
        return ("IREE 3.9 crashes (SIGBUS) on a cumsum along a dynamic dim next to an int64 -> int32 conversion "
                "(e.g. RoBERTa's position ids); accepted: a static size for that dim (export without dynamic_shapes "
                "for it, or torch.compile(dynamic=False))")
    return None


# IREE 3.9 crashes (SIGSEGV in ConvertTorchToLinalg) on a view to a static size of a dim that is dynamic in
# its source, then a transpose, then a matmul: [1,?,32] viewed as [1,20,-1,16], dims 1 and 2 swapped, times
# [1,2,16,?] (tests/data/view_transpose_matmul.mlir). Without the transpose it refuses the view with an
# error; IREE 3.13 compiles both. torch.compile(dynamic=True) of Whisper's encoder hands over such a graph
# (attention viewed to the static max_source_positions beside dynamo's symbolic length), and so does the
# default dynamic=None once another model made dynamo go dynamic. Plain iree-turbine's `turbine_cpu` backend
# compiles that encoder: it imports dynamo's graph as it is, where fxsoftmax exports it again keeping every
# symbolic dim dynamic. Evidence: tests/backends/test_dynamo.py (the program, and Whisper's encoder).
# Decision: the torch.compile backend compiles a graph whose dynamic form fails (refused, not importable, or
# crashing IREE) once per set of input shapes, and logs one line saying so.
DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN = (3, 13)

# IREE 3.9's CUDA code generation (sm_80) fails with "llvm.extractelement" on a dispatch that takes the max
# and exp(x - m) of short rows: IREE's own softmax over rows of 16, and the `12` group of `split` there or over
# a non-innermost dim of 32. IREE 3.13 compiles both. Evidence: tests/backends/test_gpu_targets.py (compiled
# here, no GPU needed). Decision: none; the export raises IREE's error, and the other presets compile.
CUDA_SHORT_ROWS_FIXED_IN = (3, 13)

# IREE renamed the AMD GPU chip flag --iree-hip-target to --iree-rocm-target (iree-org/iree#23420, Feb 2026,
# first released in 3.11 with the old name as an alias; #24381 dropped the alias). Measured: IREE 3.9 knows
# only the old name, IREE 3.13 only the new one ("Unknown command line argument '--iree-hip-target'"), so
# every hip export failed there as "cannot compile for hip". Evidence: tests/backends/test_gpu_targets.py
# (hip compiled on both IREEs). Decision: the new name from 3.11 on.
ROCM_TARGET_FLAG_SINCE = (3, 11)


def hip_chip_flag(chip: str) -> str:
    """The flag that picks an AMD GPU chip in this IREE."""
    return f"--iree-rocm-target={chip}" if IREE >= ROCM_TARGET_FLAG_SINCE else f"--iree-hip-target={chip}"


# IREE's own softmax (`fused`) over a non-innermost dim is the slowest plan but `online` on CPU:
# 1024x4096 dim 0, 2.1-2.5x the best preset (f32 and bf16, 1 and 2 threads; Xeon, IREE 3.9,
# docs/results/sweep/report.md), 1.13-1.84x on the AVX2 EPYC of the packaged calibration. The cost model
# counts the same passes for it as for `remat`, so it cannot see this. Decision: `auto` leaves `fused`
# out for a non-innermost dim on CPU.
def fused_is_a_cpu_candidate(innermost: bool) -> bool:
    return innermost


# IREE's own attention kernel (what scaled_dot_product_attention becomes when kept) is slow on CPU: an SDPA
# alone, 12 heads of 64, took 6-16x the time of the same attention decomposed into two matmuls and a softmax
# for 64 to 1024 tokens (f32 and bf16), and 1.3-2.7x for a decode step over a cache of 512 to 4096 (IREE 3.9,
# AMD EPYC Zen 4, 2 cores; `fxsoftmax bench --attention`, docs/results/attention/attention.md). A BERT-base-width
# model with SDPA took 3.5x as long kept. Decomposed, the softmax is a site the policy plans.
# On an NVIDIA H200 (cuda sm_80, IREE 3.13, one run; docs/results/gpu-h200/results.md) the kernel took 1.4-4x
# the time of the best decomposed plan for every prefill measured (512 and 2048 tokens, f32 and f16, causal),
# and 0.76x for a decode step (one query position over 4096 keys, f16). IREE 3.9 cannot compile the kernel for
# cuda at all. Nobody has measured hip or Vulkan. Decision: `attention="auto"` (the default) decomposes on CPU;
# on cuda it decomposes where the query holds more than one position and keeps the kernel for a decode step;
# on hip and Vulkan it keeps the kernel.
def attention_placement(device: str) -> tuple[str, str]:
    """(an attention mode of fxsoftmax.passes.attention, why) for scaled_dot_product_attention on a device."""
    if device == "cpu":
        return "decompose", ("attention='auto' on cpu: decomposed into matmuls and a softmax site (IREE's CPU attention "
                             "kernel measured 6-16x slower for 64-1024 tokens)")
    if device == "cuda":
        return "decompose-prefill", ("attention='auto' on cuda: decomposed into matmuls and a softmax site where the query "
                                     "holds more than one position (IREE's kernel measured 1.4-4x slower for prefill on an "
                                     "H200), IREE's kernel kept for a decode step (measured 1.3x faster)")
    return "keep", f"attention='auto' on {device}: IREE's attention kernel kept (no measurement on {device} says otherwise yet)"
