"""The module through the user's call: results written into the caller's tensors (`out=`), memory reused
once the caller lets a result go and never while it holds one, and no fresh pages per call."""

from __future__ import annotations

import resource

import pytest
import torch

import fxsoftmax

pytestmark = pytest.mark.iree


class Two(torch.nn.Module):
    """Results of every kind: one read by nothing else, one also read by another op, a view of it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        return torch.softmax(h, -1), h, h[:, 0]


def test_out_writes_into_the_callers_tensors():
    x = torch.randn(64, 2048)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
    y = torch.empty_like(x)
    assert art(x, out=y) is y and torch.allclose(y, torch.softmax(x, -1), atol=1e-6, rtol=0)
    model, x3 = Two().eval(), torch.randn(2, 5, 16)
    art = fxsoftmax.export(model, (x3,))
    outs = tuple(torch.empty_like(t) for t in model(x3))
    got = art(x3, out=outs)
    assert all(g is o for g, o in zip(got, outs))
    with torch.no_grad():
        assert all(torch.allclose(g, w, atol=1e-6, rtol=0) for g, w in zip(got, model(x3)))


def test_dynamic_sizes_with_out():
    model = Two().eval()
    art = fxsoftmax.export(model, (torch.randn(2, 5, 16),), dynamic_shapes=({1: torch.export.Dim("seq", min=2, max=64)},))
    for n in (3, 9, 40):
        x = torch.randn(2, n, 16)
        with torch.no_grad():
            want = model(x)
        outs = tuple(torch.empty_like(t) for t in want)
        assert all(torch.allclose(g, w, atol=1e-6, rtol=0) for g, w in zip(art(x, out=outs), want))
        assert all(torch.allclose(g, w, atol=1e-6, rtol=0) for g, w in zip(art(x), want))
    with pytest.raises(ValueError, match=r"out= tensor 0 has shape \(2, 3, 16\); expected .* shape \(2, 9, 16\)"):
        art(torch.randn(2, 9, 16), out=tuple(torch.empty(s) for s in [(2, 3, 16), (2, 9, 16), (2, 16)]))


def test_a_result_the_caller_holds_is_never_reused():
    x = torch.randn(32, 1024)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
    first = art(x)
    kept, view, addresses = first.clone(), first[3], {first.data_ptr()}
    del first  # a view still holds its memory
    second = art(x * 2)
    assert torch.equal(view, kept[3]) and torch.allclose(second, torch.softmax(x * 2, -1), atol=1e-6, rtol=0)
    assert second.data_ptr() not in addresses
    addresses.add(second.data_ptr())
    del second, view
    third = art(x)  # nothing of the caller's holds that memory now: it is reused
    assert third.data_ptr() in addresses and torch.allclose(third, torch.softmax(x, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("policy", ["split", "inplace"])
def test_no_fresh_pages_per_call(policy):
    """A 16 MiB result (and `split`'s 16 MiB z) would fault in 4096 pages each if they were fresh memory
    (IREE 3.13's runtime keeps no freed buffers: quirks.RUNTIME_CACHES_BUFFERS_UNTIL)."""
    x = torch.randn(1024, 4096)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=policy)
    for _ in range(2):
        art(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        y = art(x)
        del y
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5 < 512
    assert torch.allclose(art(x), torch.softmax(x, -1), atol=1e-6, rtol=0)


def test_out_of_the_wrong_kind_is_a_value_error():
    x = torch.randn(8, 64)
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
    wide = torch.empty(8, 65)
    cases = {
        "shape": torch.empty(8, 63),
        "dtype": torch.empty(8, 64, dtype=torch.float64),
        "device": torch.empty(8, 64, device="meta"),
        "non-contiguous": torch.empty(64, 8).t(),
        "aligned": wide.view(-1)[1:513].view(8, 64),
        "shared": x,
    }
    for needle, out in cases.items():
        expected = r"expected a contiguous, 64-byte aligned cpu tensor of shape \(8, 64\) and dtype torch.float32"
        with pytest.raises(ValueError, match=f"out= tensor 0 has .*{needle}.*; {expected}"):
            art(x, out=out)
    with pytest.raises(ValueError, match=r"out= must hold 1 tensor\(s\) \(\(8, 64\) torch.float32\), got 2"):
        art(x, out=(torch.empty(8, 64), torch.empty(8, 64)))


class ScatterInto(torch.nn.Module):
    """Scatter-like ops whose destination is an input, directly or through an op IREE fuses into them."""

    def forward(self, z, index):
        ones = torch.ones(index.shape)
        return (z.scatter_add(1, index, ones), (z * 2).index_put((torch.arange(z.shape[0]).unsqueeze(-1), index), torch.tensor(-1.0)),
                torch.slice_scatter(z, ones[:, :1], 1, 0, 1))


@pytest.mark.parametrize("out", [False, True])
def test_scatter_into_an_input(out):
    """IREE computes these in their destination's buffer (quirks.SCATTER_INTO_STORAGE_FIXED_IN): the caller's
    input must come back unchanged, results right, with and without out=, call after call."""
    g = torch.Generator().manual_seed(0)
    z, index = torch.rand(5, 6, generator=g), torch.stack([torch.randperm(6, generator=g)[:2] for _ in range(5)])
    art = fxsoftmax.export(ScatterInto(), (z, index))
    assert art.written == [0]
    before, want = z.clone(), ScatterInto()(z, index)
    for _ in range(2):
        got = art(z, index, out=[torch.empty_like(w) for w in want]) if out else art(z, index)
        assert torch.equal(z, before)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
