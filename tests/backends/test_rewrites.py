"""fxsoftmax's own rewrites of ops IREE cannot import (fxsoftmax.backends.rewrites), each on real IREE
against eager, and the errors that name an op nothing lowers, with its model line."""

from __future__ import annotations

import pytest
import torch

import fxsoftmax
from fxsoftmax.backends import gaps, rewrites
from fxsoftmax.backends.compiler import IreeCompileError
from fxsoftmax.backends.gaps import UnsupportedOpError
from fxsoftmax.backends.pipeline import Options, compile_program


class Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _export_and_run(fn, *args):
    art = fxsoftmax.export(Call(fn), args, policy="split")
    return art(*args), fn(*args)


def test_histc():
    ids = torch.tensor([0, 3, 3, 1, 7, 2, 3, 0, 9, -1, 5, 5, 5, 6], dtype=torch.float32)  # 9 and -1 fall outside
    got, want = _export_and_run(lambda x: torch.histc(x, bins=8, min=0, max=7), ids)
    assert got.dtype == want.dtype and torch.equal(got, want)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 2
    got, want = _export_and_run(lambda x: torch.histc(x, bins=10, min=-3, max=2.5), x)  # real-valued bins
    assert torch.equal(got, want)


class HistogramOverTheDataRange(torch.nn.Module):
    def forward(self, x):
        return torch.histc(x, bins=4)


def test_histc_over_the_data_range_is_named_with_its_model_line():
    with pytest.raises(UnsupportedOpError) as e:
        fxsoftmax.export(HistogramOverTheDataRange(), (torch.randn(16),))
    msg = str(e.value)
    assert "aten.histc (at " in msg and "test_rewrites.py:" in msg and "return torch.histc(x, bins=4)" in msg
    assert "neither fxsoftmax's own rewrites" in msg


class Router(torch.nn.Module):
    def forward(self, x):
        return torch.topk(torch.softmax(x, -1), 3, dim=-1, sorted=False)


def test_topk_unsorted():
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    values, index = fxsoftmax.export(Router(), (x,), policy="split")(x)
    # any order is a valid unsorted top-k: the same set, and each value at its index
    assert torch.allclose(values.sort(-1).values, Router()(x).values.sort(-1).values, atol=1e-6)
    assert torch.allclose(torch.softmax(x, -1).gather(-1, index), values, atol=1e-6)


def test_an_op_iree_leaves_behind_a_constant_is_named_with_its_model_line():
    """Without the rewrite, IREE fails on topk(sorted=False) naming only a torch.constant; the error names the op."""
    ep = torch.export.export(Router(), (torch.randn(6, 16),))
    with pytest.raises(IreeCompileError) as failed:
        compile_program(ep, Options("split"), what="the router")
    assert "failed to legalize operation 'torch.constant." in str(failed.value)  # all IREE itself says
    with pytest.raises(UnsupportedOpError) as e:
        gaps.importer_gaps(failed.value, ep)
    msg = str(e.value)
    assert "aten.topk (at " in msg and "test_rewrites.py:" in msg and "return torch.topk(torch.softmax(x, -1), 3" in msg


class GroupLimitedRouter(torch.nn.Module):
    """DeepSeek-V3's group selection: the top 2 of 4 groups, then a mask of the chosen groups."""

    def forward(self, scores):
        group_scores = scores.view(-1, 4, 2).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=2, dim=-1, sorted=False)[1]
        mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        return mask, torch.zeros(scores.shape).scatter(0, torch.tensor([[1, 0] * 4, [0, 2] * 4]), -2.5)


def test_scatter_value_at_topk_indices():
    scores = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    got, want = fxsoftmax.export(GroupLimitedRouter(), (scores,), policy="split")(scores), GroupLimitedRouter()(scores)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def _grouped(x, weight, offs):
    import transformers.integrations.moe  # noqa: F401 (registers transformers::grouped_mm_fallback)

    return torch.ops.transformers.grouped_mm_fallback(x, weight, offs)


# torch.export takes aten._grouped_mm in bfloat16 only (its meta kernel); transformers calls its fallback op otherwise
@pytest.mark.parametrize("op, dtype", [("transformers.grouped_mm_fallback", torch.float32), ("transformers.grouped_mm_fallback", torch.bfloat16),
                                       ("aten._grouped_mm", torch.bfloat16)], ids=str)
def test_grouped_mm(op, dtype):
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(10, 16, generator=g).to(dtype), torch.randn(4, 16, 8, generator=g).to(dtype)  # rows of 16 B, as grouped_mm needs
    offs = torch.tensor([3, 3, 7, 9], dtype=torch.int32)  # group 1 empty, row 9 past the last group
    fn = _grouped if op.startswith("transformers") else (lambda x, w, o: torch._grouped_mm(x, w, offs=o))
    got, want = _export_and_run(fn, x, weight, offs)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert got.dtype == dtype and (got[:9].float() - want[:9].float()).abs().max().item() <= tol
    assert torch.equal(got[9], torch.zeros_like(got[9]))


def test_every_rewrite_names_its_evidence():
    tests = {name for name in globals() if name.startswith("test_")}
    for rewrite in rewrites.REWRITES:
        named = [w.split("::")[1].split(";")[0].strip() for w in rewrite.evidence.split() if "test_rewrites.py::" in w]
        assert named and set(named) <= tests, rewrite.op
