"""`inplace`: one hand-written dispatch keeping exp(x - m) in the output buffer (fxsoftmax.lowering.inplace)."""

from __future__ import annotations

import pytest
import torch

import fxsoftmax
from fxsoftmax.auto import AutoChooser
from fxsoftmax.backends import flags
from fxsoftmax.backends.compiler import iree_compile
from fxsoftmax.backends.importer import program_to_mlir
from fxsoftmax.backends.pipeline import export_program
from fxsoftmax.passes.rewrite import UnsupportedPlanError
from helpers import STACK_LIMIT, SoftmaxAs, assert_close, edge_rows

pytestmark = pytest.mark.iree


@pytest.mark.parametrize("shape", [(64, 1000), (3, 5, 77), (33,), (2, 1, 64), (7, 129), (1, 4096)], ids=str)
def test_matches_eager(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 8
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="inplace")
    assert (art.sites[0].plan, art.sites[0].status) == ("inplace", "rewritten")
    assert (art(x) - torch.softmax(x, -1)).abs().max().item() <= 1e-6


def test_masked_and_extreme_rows():
    """Fully masked rows (`_safe_softmax` gives zeros, plain softmax NaN), overflowing and far-negative rows."""

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.ops.aten._safe_softmax.default(x, -1), torch.softmax(x, -1)

    x = edge_rows()
    art = fxsoftmax.export(M(), (x,), policy="inplace")
    for got, want in zip(art(x), M()(x)):
        assert_close(got, want)


def test_every_dim_dynamic_one_module_many_sizes():
    art = fxsoftmax.export(torch.nn.Softmax(-1), (torch.randn(4, 8, 33),), policy="inplace",
                           dynamic_shapes=({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO},))
    for shape in [(4, 8, 33), (2, 3, 5), (1, 1, 100), (3, 2, 640)]:
        y = torch.randn(shape) * 8
        assert (art(y) - torch.softmax(y, -1)).abs().max().item() <= 1e-6, shape


def test_zero_size_dims_give_pytorchs_empty_result():
    for shape in [(5, 0, 0), (5, 0), (0, 7)]:
        x = torch.randn(shape)
        got = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="inplace")(x)
        assert got.shape == x.shape and got.numel() == 0


@pytest.mark.parametrize("x_dtype, dtype", [(torch.bfloat16, None), (torch.float16, None), (torch.bfloat16, torch.float32),
                                            (torch.float16, torch.float32), (torch.float32, torch.bfloat16),
                                            (torch.bfloat16, torch.float16)], ids=str)
def test_16_bit_dtypes(x_dtype, dtype):
    """The kernel computes in float32; a 16-bit output holds z rounded to its dtype before the scale, so y is
    at most about one unit in the last place from the exact softmax (eager: half a unit)."""
    x = (torch.randn(64, 1000, generator=torch.Generator().manual_seed(0)) * 8).to(x_dtype)
    model = SoftmaxAs(dtype)
    art = fxsoftmax.export(model, (x,), policy="inplace")
    assert art.sites[0].plan == "inplace"
    got, want = art(x), model(x)
    assert_close(got, want)
    if got.dtype != torch.float32:
        exact, info = torch.softmax(x.to(dtype or x_dtype).double(), -1), torch.finfo(got.dtype)
        assert ((got.double() - exact).abs() <= info.eps * (exact + info.smallest_normal)).all()  # subnormals: fixed spacing


@pytest.mark.slow
@pytest.mark.parametrize("shape, dtype", [((16384, 16384), torch.float32), ((1, 1048576), torch.float32),
                                          ((1, 1048576), torch.bfloat16)], ids=str)
def test_one_dispatch_one_exp_no_stack_no_extra_buffer(shape, dtype):
    """The issue's bar: one dispatch, one exp per element, nothing but x read and y written, under a 4 KiB stack."""
    ep = export_program(torch.nn.Softmax(-1), (torch.empty(shape, dtype=dtype),), None)
    fxsoftmax.decompose_softmax(ep, "inplace")
    mlir = program_to_mlir(ep)
    target = fxsoftmax.Target("cpu")
    iree_compile(mlir, flags.module_flags(target) + STACK_LIMIT, what=f"inplace {shape}")
    site = fxsoftmax.inspect(mlir, target).sites[0]
    assert site.matches_plan, site.problem
    (d,) = site.dispatches
    size = dtype.itemsize * shape[0] * shape[1]
    assert (d.steps, site.exps_per_element, d.stack_bytes) == (["1", "2", "3", "4"], 1, 0)
    assert (d.reads_bytes, d.writes_bytes, site.stored_bytes) == (size, size, 0)


@pytest.mark.parametrize("dtype, dim, what", [(torch.float64, -1, "in \\['float64'\\]"), (torch.float32, 0, "over dim 0 of a rank-2 tensor")])
def test_refuses_what_the_kernel_does_not_take(dtype, dim, what):
    """The pass refuses (export refuses float64 before it, for every policy)."""
    ep = export_program(torch.nn.Softmax(dim), (torch.randn(4, 33).to(dtype),), None)
    accepted = "accepted: a softmax over the innermost dim in float32, bfloat16 or float16"
    with pytest.raises(UnsupportedPlanError, match=f"policy 'inplace': a softmax {what}; {accepted}"):
        fxsoftmax.decompose_softmax(ep, "inplace")


def test_is_cpu_only():
    with pytest.raises(ValueError, match="policy 'inplace' .* is a hand-written CPU executable; accepted on vulkan: every other preset"):
        fxsoftmax.export(torch.nn.Softmax(-1), (torch.randn(4, 33),), policy="inplace", device="vulkan")


def test_auto_weighs_inplace_only_where_it_applies():
    auto = AutoChooser("cpu", 2)
    assert "inplace" in auto.predicted_ms(4096, 16384, True, "float32")
    assert "inplace" in auto.predicted_ms(4096, 16384, True, "bfloat16")
    assert "inplace" not in auto.predicted_ms(4096, 16384, True, "float64")
    assert "inplace" not in auto.predicted_ms(4096, 16384, True, "float32", in_output=False)
    assert "inplace" not in auto.predicted_ms(1024, 4096, False, "float32")
