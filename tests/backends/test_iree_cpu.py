"""Real IREE: dispatch structure read from IREE's own output, and numerics on the IREE CPU runtime."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxsoftmax
from fxsoftmax.backends import flags
from fxsoftmax.backends.compiler import IreeCompileError, iree_compile
from fxsoftmax.backends.importer import program_to_mlir
from fxsoftmax.backends.pipeline import export_program
from fxsoftmax.core.policy import parse_policy
from helpers import PRESETS, STACK_LIMIT, FourSites, SoftmaxAs, assert_close, edge_rows, four_site_args, planned_steps, pulls_producers

pytestmark = pytest.mark.iree


def _site_dispatches(report) -> int:
    return sum(len(s.dispatches) for s in report.sites)


@pytest.mark.parametrize("policy", ["fused", *PRESETS, "1|2|3'4", "1|2'34"])
def test_dispatches_and_steps_are_what_the_plan_says(policy):
    art = fxsoftmax.export(FourSites(), four_site_args(), policy=policy)
    report = fxsoftmax.inspect(art)
    plan = parse_policy(policy)
    want_groups = [["fused"]] if plan.is_fused else planned_steps(plan)
    assert len(report.sites) == 4
    for site in report.sites:
        assert site.matches_plan, site.problem
        if plan.is_fused:
            continue  # IREE decides: one dispatch, or two for a non-innermost dim
        assert [d.steps for d in site.dispatches] == want_groups
        assert site.exps_per_element == plan.exps_per_element
        # each group is its own IREE executable: no two groups of a site share a dispatch
        assert len({d.dispatch for d in site.dispatches}) == plan.dispatches
    # The scale and mask producers of the first site move into its first group when no later group reads
    # x again; otherwise (and under IREE's own softmax) they stay one dispatch of their own, outside.
    pulled = pulls_producers(plan)
    first = report.sites[0].dispatches[0]
    assert ({"arith.mulf", "arith.addf"} <= set(first.other_ops)) == pulled, first
    assert report.total_dispatches - _site_dispatches(report) == (0 if pulled else 1)
    # what crosses a boundary (first site): exactly the plan's stored steps
    n, rows = 2 * 4 * 16 * 16, 2 * 4 * 16
    step_bytes = {1: rows * 4, 2: n * 4, 3: rows * 4}
    assert report.sites[0].stored_bytes == sum(step_bytes[s] for s in plan.stored())


def test_fused_module_is_what_plain_iree_makes():
    """policy="fused" adds nothing that changes dispatch formation: IREE's default flags on the same
    program give the same dispatches."""
    ep = export_program(FourSites(), four_site_args(), None)
    plain = iree_compile(program_to_mlir(ep), ["--iree-hal-target-backends=llvm-cpu", "--compile-to=flow"]).output.decode()
    report = fxsoftmax.inspect(fxsoftmax.export(FourSites(), four_site_args(), policy="fused"), stack=False)
    assert report.total_dispatches == plain.count("flow.dispatch @")


@pytest.mark.parametrize("policy", ["fused", *PRESETS])
def test_cpu_runtime_matches_eager_f32(policy):
    args = four_site_args()
    art = fxsoftmax.export(FourSites(), args, policy=policy)
    for got, want in zip(art(*args), FourSites()(*args)):
        assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("policy", ["split", "remat", "online"])
def test_cpu_runtime_matches_eager_low_precision(dtype, policy):
    args = four_site_args(dtype)
    art = fxsoftmax.export(FourSites(), args, policy=policy)
    for got, want in zip(art(*args), FourSites()(*args)):
        assert_close(got, want)


def test_dynamic_batch_one_module_many_sizes():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x * 2.0, -1)

    batch = torch.export.Dim("batch", min=1, max=256)
    art = fxsoftmax.export(M(), (torch.randn(4, 8, 32),), policy="split-sum", dynamic_shapes=({0: batch},))
    assert "?x8x32xf32" in art.mlir.replace("!torch.vtensor<[?,8,32],f32>", "?x8x32xf32")
    for b in (1, 3, 17, 64):
        x = torch.randn(b, 8, 32)
        assert (art(x) - M()(x)).abs().max().item() <= 1e-5
    site = fxsoftmax.inspect(art).sites[0]
    assert site.matches_plan and len(site.dispatches) == 2
    assert site.dispatches[0].reads_bytes is None and "?" in site.dispatches[0].reads[0]


@pytest.mark.parametrize("policy", ["remat", "per-step", "1|234", "online"])
def test_dynamic_sequence_attention_when_a_later_group_rereads_x(policy):
    """The first group would fuse the scale producer and write x out; with dynamic sizes IREE 3.9's module
    then dies with SIGBUS, so the pass fences x there (regression test)."""

    class M(torch.nn.Module):
        def forward(self, a):
            return torch.softmax((a @ a.transpose(-1, -2)) * 0.25, -1)

    seq = torch.export.Dim("seq", min=2, max=64)
    art = fxsoftmax.export(M(), (torch.randn(2, 12, 16),), policy=policy, dynamic_shapes=({1: seq},))
    for n in (5, 12, 33):
        a = torch.randn(2, n, 16)
        assert (art(a) - M()(a)).abs().max().item() <= 1e-5
    assert fxsoftmax.inspect(art, stack=False).sites[0].matches_plan


@pytest.mark.parametrize("policy", ["fused", *PRESETS])
def test_cpu_runtime_edge_rows(policy):
    """-inf rows (incl. _safe_softmax's zeros), extreme and far-negative rows, over the last dim and dim 0.
    IREE 3.9's default vectorization pads the max reduction of a 33-long row with 0 (all-negative rows
    then get max 0 and exp underflows to NaN); the CPU target peels instead (regression test)."""

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.ops.aten._safe_softmax.default(x, -1), torch.softmax(x.t(), 0)

    x = edge_rows()
    art = fxsoftmax.export(M(), (x,), policy=policy)
    for got, want in zip(art(x), M()(x)):
        assert_close(got, want)


def test_artifact_save_and_reload(tmp_path):
    import iree.runtime as rt
    import numpy as np

    from fxsoftmax import quirks

    x = torch.randn(3, 50)
    art = fxsoftmax.export(torch.nn.Softmax(dim=1), (x,), policy="remat")
    art.save(tmp_path / "m.vmfb")
    art.save_mlir(tmp_path / "m.mlir")
    assert (tmp_path / "m.mlir").read_text() == art.mlir
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    # IREE's own runtime, nothing of fxsoftmax's: the module says in its reflection how much transient memory
    # `main` takes as its last argument where its transients are external (quirks.RUNTIME_CACHES_BUFFERS_UNTIL)
    device, instance = rt.get_device("local-task"), rt.VmInstance()
    module = rt.VmModule.mmap(instance, str(tmp_path / "m.vmfb"))
    context = rt.VmContext(instance, [rt.create_hal_module(instance, device), module])
    args = [device.allocator.allocate_buffer_copy(memory_type=rt.MemoryType.DEVICE_LOCAL, allowed_usage=rt.BufferUsage.DEFAULT,
                                                  device=device, buffer=x.numpy(), element_type=rt.HalElementType.FLOAT_32)]
    size = module.lookup_function("main$async").reflection.get("iree.abi.transients.size.constant")
    assert (size is not None) == (quirks.EXTERNAL_TRANSIENTS_FLAG in art.flags)
    if size is not None:
        args.append(device.allocator.allocate_buffer(memory_type=rt.MemoryType.DEVICE_LOCAL, allowed_usage=rt.BufferUsage.DEFAULT,
                                                     allocation_size=max(int(size), 64)))
    arg_list, results = rt.VmVariantList(len(args)), rt.VmVariantList(1)
    for a in args:
        arg_list.push_ref(a)
    context.invoke(module.lookup_function("main"), arg_list, results)
    got = torch.from_numpy(results.get_as_object(0, rt.HalBufferView).get_buffer().map().asarray([3, 50], np.dtype(np.float32)).copy())
    assert (got - torch.softmax(x, 1)).abs().max().item() <= 1e-5


def test_inspect_accepts_mlir_text():
    art = fxsoftmax.export(torch.nn.Softmax(dim=0), (torch.randn(64, 8),), policy="per-step")
    report = fxsoftmax.inspect(art.mlir, "cpu")
    assert [len(s.dispatches) for s in report.sites] == [4]
    assert report.sites[0].plan == "1|2|3|4" and report.sites[0].matches_plan
    assert f"| {art.sites[0].name} |" in report.table() and report.to_json().startswith("{")


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="unknown device 'tpu'; accepted: cpu, cuda, hip, vulkan"):
        fxsoftmax.export(torch.nn.Softmax(dim=0), (torch.randn(4),), device="tpu")
    with pytest.raises(ValueError, match="unknown policy"):
        fxsoftmax.export(torch.nn.Softmax(dim=0), (torch.randn(4),), policy="fastest")
    art = fxsoftmax.export(torch.nn.Softmax(dim=0), (torch.randn(4),), policy="split")
    with pytest.raises(ValueError, match="structure"):
        art(torch.randn(4), torch.randn(4))
    with pytest.raises(IreeCompileError, match="IREE could not compile"):
        iree_compile("this is not mlir", ["--iree-hal-target-backends=llvm-cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(16384, 16384), (1, 1048576)], ids=str)
def test_every_preset_compiles_under_a_4k_stack(shape):
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1)

    target = fxsoftmax.Target("cpu")
    for policy in PRESETS:
        ep = export_program(M(), (torch.empty(shape),), None)
        fxsoftmax.decompose_softmax(ep, policy)
        mlir = program_to_mlir(ep)
        iree_compile(mlir, flags.module_flags(target) + STACK_LIMIT, what=f"{policy} {shape}")
        report = fxsoftmax.inspect(mlir, target)
        site = report.sites[0]
        assert site.matches_plan, (policy, site.problem)
        assert all(d.stack_bytes is not None and d.stack_bytes <= 4096 for d in site.dispatches), (policy, site.dispatches)


def test_matmuls_are_tiled_alike_under_every_plan():
    """How IREE tiles a model's matmuls does not depend on the softmax plan: on IREE 3.13 only modules that
    kept an IREE softmax got the peel flag, and with it cache-level matmul tiles (quirks.PEEL_FOR_MATMULS_SINCE)."""

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(512, 512), torch.nn.Linear(512, 512)

        def forward(self, x):
            return self.b(torch.softmax(self.a(x), -1))

    x, configs = torch.randn(1, 256, 512), {}
    for policy in ("fused", "split", "inplace"):
        art = fxsoftmax.export(M(), (x,), policy=policy)
        ir = iree_compile(art.mlir, art.flags, what=policy, phases=("executable-configurations",)).phases["executable-configurations"]
        configs[policy] = sorted(re.findall(r"linalg\.(?:batch_)?matmul\w* \{lowering_config = ([^}]*\})", ir))
    assert configs["fused"] and configs["split"] == configs["fused"] == configs["inplace"], configs


def test_stack_limit_flag_is_enforced():
    """Negative control: the same check rejects a dispatch whose stack exceeds a tiny limit."""
    ep = export_program(torch.nn.Softmax(dim=-1), (torch.empty(64, 1024),), None)
    fxsoftmax.decompose_softmax(ep, "online")  # its reduction keeps 32 B on the stack (IREE 3.9 and 3.13)
    mlir = program_to_mlir(ep)
    used = max(d.stack_bytes or 0 for s in fxsoftmax.inspect(mlir, "cpu").sites for d in s.dispatches)
    assert used > 0
    with pytest.raises(IreeCompileError, match="stack allocation limit"):
        iree_compile(mlir, flags.module_flags(fxsoftmax.Target("cpu")) + flags.stack_limit(1))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.sampled_from([1, 2, 3, 8, 33, 64]), min_size=1, max_size=4),
    dim_seed=st.integers(0, 3),
    policy=st.sampled_from(PRESETS),
)
def test_random_shapes_keep_the_plan_in_iree(shape, dim_seed, policy):
    """Unit dims, odd sizes and any dim: IREE still forms exactly the planned dispatches, and the
    module computes softmax."""
    dim = dim_seed % len(shape) - len(shape) * (dim_seed % 2)
    x = torch.randn(shape)
    art = fxsoftmax.export(torch.nn.Softmax(dim=dim), (x,), policy=policy)
    if shape[dim] == 1:
        assert art.sites[0].status == "skipped" and "size-1" in art.sites[0].reason
    else:
        site = fxsoftmax.inspect(art, stack=False).sites[0]
        assert site.matches_plan, (shape, dim, policy, site.problem)
    assert (art(x) - torch.softmax(x, dim)).abs().max().item() <= 1e-5


def test_ops_iree_cannot_import_are_decomposed_or_named():
    """The rule for importer gaps: aten.diff (transformers' mask code) is decomposed by PyTorch and the
    model exports; aten.histc over the data's range has neither a decomposition nor a rewrite of ours and
    fails at export time, naming the op."""
    from fxsoftmax.backends.gaps import UnsupportedOpError

    class Diff(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(torch.diff(x, dim=-1), -1)

    class Hist(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1) * torch.histc(x, bins=4).sum()

    x = torch.randn(4, 9)
    art = fxsoftmax.export(Diff(), (x,), policy="split")
    assert (art(x) - Diff()(x)).abs().max().item() <= 1e-5
    with pytest.raises(UnsupportedOpError, match="aten.histc"):
        fxsoftmax.export(Hist(), (x,))


@pytest.mark.parametrize("policy", ["split-sum", "1|23|4"])
def test_dynamic_softmax_dim_refuses_plans_iree_cannot_run(policy):
    """A group storing z and its sum with a dynamic softmax dim dies with SIGBUS in IREE 3.9: export
    refuses it up front, naming the site and what is accepted. IREE 3.13 runs it."""
    from fxsoftmax import quirks

    x = torch.randn(4, 8, 33)
    dyn = ({2: torch.export.Dim.AUTO},)
    if quirks.needed(quirks.STORE_Z_AND_SUM_FIXED_IN):
        with pytest.raises(ValueError, match=r"softmax site 'softmax' .*SIGBUS.* accepted for a dynamic softmax dim"):
            fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=policy, dynamic_shapes=dyn)
        return
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=policy, dynamic_shapes=dyn)
    for n in (33, 70):
        y = torch.randn(4, 8, n)
        assert (art(y) - torch.softmax(y, -1)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("policy", ["fused", "remat", "split", "per-step", "online", "auto"])
def test_dynamic_softmax_dim_every_dim_dynamic_runs(policy):
    art = fxsoftmax.export(torch.nn.Softmax(-1), (torch.randn(4, 8, 33),), policy=policy,
                           dynamic_shapes=({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO},))
    for shape in [(4, 8, 33), (2, 3, 5), (1, 1, 100)]:
        y = torch.randn(shape)
        assert (art(y) - torch.softmax(y, -1)).abs().max().item() <= 1e-5, shape


def test_float64_is_refused_at_export():
    with pytest.raises(ValueError, match="cannot run float64 .* accepted: float32, float16 and bfloat16"):
        fxsoftmax.export(torch.nn.Softmax(-1), (torch.randn(4, 33, dtype=torch.float64),))


@pytest.mark.parametrize("policy", [*PRESETS, "inplace"])
def test_a_cast_to_bfloat16_before_softmax_rounds_x(policy):
    """softmax(x_f32, dtype=bfloat16) is the softmax of x rounded to bf16 (quirks.BF16_ROUND_TRIP_FIXED_IN)."""
    x = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0)) * 8
    got = fxsoftmax.export(SoftmaxAs(torch.bfloat16), (x,), policy=policy)(x).double()
    rounded, unrounded = (torch.softmax(t.double(), -1) for t in (x.bfloat16(), x))
    eps = torch.finfo(torch.bfloat16).eps
    assert ((got - rounded).abs() <= eps * (rounded + 2**-126)).all()
    assert not ((got - unrounded).abs() <= eps * (unrounded + 2**-126)).all()  # the rounding matters here


@pytest.mark.parametrize("policy", ["fused", *PRESETS])
def test_zero_size_dims_give_pytorchs_empty_result(policy):
    for shape, dim in [((5, 0, 0), -1), ((5, 0), -1), ((0, 7), -1), ((3, 0, 4), 1)]:
        x = torch.randn(shape)
        art = fxsoftmax.export(torch.nn.Softmax(dim), (x,), policy=policy)
        got = art(x)
        assert got.shape == torch.softmax(x, dim).shape and got.numel() == 0


def test_artifact_summary_non_tensor_arguments_and_bounded_cache(monkeypatch):
    from fxsoftmax.backends import compiler as export_module

    class Scaled(torch.nn.Module):
        def forward(self, x, scale: float):
            return torch.softmax(x * scale, -1)

    x = torch.randn(4, 16)
    art = fxsoftmax.export(Scaled(), (x, 2.0), policy="split")
    assert (art(x, 2.0) - Scaled()(x, 2.0)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match=r"non-tensor arguments \[3.0\] differ .* \[2.0\]"):
        art(x, 3.0)
    text = repr(art)
    assert text.startswith("Artifact(target cpu:host, 1 softmax site(s), 1 rewritten") and len(text) < 300

    monkeypatch.setattr(export_module, "COMPILE_CACHE_ENTRIES", 2)
    for n in (8, 9, 10):
        fxsoftmax.export(torch.nn.Softmax(-1), (torch.randn(2, n),), policy="remat")
    assert len(export_module._COMPILED) == 2


def test_compiles_are_shared_through_the_disk_cache(tmp_path, monkeypatch):
    """$FXSOFTMAX_COMPILE_CACHE: a process that finds a whole entry runs no iree-compile; a damaged one
    is compiled again and replaced (iree-compile stamps the time, so the bytes differ); other flags are
    another entry."""
    from collections import OrderedDict

    from fxsoftmax.backends import compiler

    folder = tmp_path / "compiles"
    monkeypatch.setenv(compiler.DISK_CACHE_ENV, str(folder))
    runs = []
    real = compiler.iree_compile
    monkeypatch.setattr(compiler, "iree_compile", lambda *a, **k: runs.append(a) or real(*a, **k))
    x = torch.randn(3, 11)

    def export_afresh(**kw):  # as a new process would: nothing compiled in memory
        monkeypatch.setattr(compiler, "_COMPILED", OrderedDict())
        art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split", **kw)
        assert_close(art(x), torch.softmax(x, -1))
        return art

    first = export_afresh()
    entries = sorted(p.name for p in folder.iterdir())
    assert len(runs) == 1 and [n.rsplit(".", 1)[1] for n in entries] == ["json", "out"]
    assert export_afresh().vmfb == first.vmfb and len(runs) == 1
    out = next(folder.glob("*.out"))
    out.write_bytes(out.read_bytes()[:100])
    again = export_afresh()
    assert len(runs) == 2 and export_afresh().vmfb == again.vmfb and len(runs) == 2
    export_afresh(extra_flags=["--iree-opt-level=O1"])
    assert len(runs) == 3 and len(list(folder.glob("*.out"))) == 2 and not list(folder.glob(".partial-*"))


def test_cumsum_over_a_dynamic_dim_next_to_int32_is_refused_and_others_run():
    """IREE 3.9 dies (SIGBUS) on RoBERTa's position-id cumsum with a dynamic sequence: export refuses that
    shape of it; the same cumsum without the int32 truncation runs, its int64 result read back right."""

    class RobertaPositions(torch.nn.Module):
        def forward(self, ids):
            mask = ids.ne(1).int()
            return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1

    class Positions(torch.nn.Module):
        def forward(self, ids):
            return torch.cumsum(ids.ne(1).int(), dim=1) + 1

    from fxsoftmax import quirks

    seq = ({1: torch.export.Dim.AUTO},)
    ids = torch.randint(0, 9, (1, 8))
    if quirks.needed(quirks.CUMSUM_FIXED_IN):
        with pytest.raises(ValueError, match="cumsum along a dynamic dim next to an int64 -> int32 conversion.*accepted: a static size"):
            fxsoftmax.export(RobertaPositions(), (ids,), dynamic_shapes=seq)
    else:  # IREE 3.13 runs it
        dynamic = fxsoftmax.export(RobertaPositions(), (ids,), dynamic_shapes=seq)
        x = torch.randint(0, 9, (1, 13))
        assert torch.equal(dynamic(x), RobertaPositions()(x))
    static = fxsoftmax.export(RobertaPositions(), (ids,))
    assert torch.equal(static(ids), RobertaPositions()(ids))
    art = fxsoftmax.export(Positions(), (ids,), dynamic_shapes=seq)
    for n in (8, 13):
        x = torch.randint(0, 9, (1, n))
        got = art(x)
        assert got.dtype == torch.int64 and torch.equal(got, Positions()(x))


def test_cpu_calls_share_memory_with_torch_instead_of_copying():
    """On the CPU drivers inputs and results cross by DLPack: the module reads the tensor's own memory and
    the result is the module's buffer. A misaligned or non-contiguous input is copied."""
    x = torch.randn(8, 64)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
    runner = art.runner()
    bv = runner.put(x)
    x.mul_(0.0)  # the device buffer is x: it sees the change
    assert torch.allclose(runner.fetch(runner.invoke([bv])[0]), torch.full((8, 64), 1 / 64))
    y = art(x)
    assert (y - torch.softmax(x, -1)).abs().max().item() <= 1e-5
    base = torch.randn(8 * 64 + 1)
    odd = base[1:].view(8, 64)  # 4 bytes off the 64-byte alignment IREE needs
    assert (art(odd) - torch.softmax(odd, -1)).abs().max().item() <= 1e-5
    t = torch.randn(64, 8).t()  # not contiguous
    assert (art(t) - torch.softmax(t, -1)).abs().max().item() <= 1e-5


def test_local_task_has_a_worker_per_physical_core():
    """IREE's own topology detection gave a single worker on a 2-core VM; fxsoftmax asks for one per core."""
    import subprocess
    import sys

    from fxsoftmax.backends.runtime import physical_cores

    probe = (
        "import os\n"
        "from fxsoftmax.backends.runtime import open_device\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "open_device('local-task')\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n"
    )
    new_threads = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert new_threads == physical_cores() + 1  # the workers and IREE's poller thread
