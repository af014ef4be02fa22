"""Shared test helpers (graph builders and checks); no mocks of torch or IREE."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten
PRESETS = ("remat", "split", "split-sum", "per-step", "online")
# Tolerance vs eager for the output dtype: f32 per the issue; f16/bf16 one unit in the last place at 1.0.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2**-10, torch.bfloat16: 2**-7}


def aten_graph(fn, *example) -> fx.GraphModule:
    """An ATen-level graph with FakeTensor meta['val'] on every node, as export/dynamo produce."""
    return make_fx(fn, tracing_mode="fake", pre_dispatch=True)(*example)


def count(gm: fx.GraphModule, target) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target == target)


def assert_meta_matches_execution(gm: fx.GraphModule, *inputs: torch.Tensor) -> None:
    """Every node's meta['val'] has the shape and dtype the node really produces."""
    seen = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            seen[n] = out
            return out

    Recorder(gm).run(*inputs)
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):
            real = seen[n]
            assert tuple(val.shape) == tuple(real.shape) and val.dtype == real.dtype, (n.name, val, real.shape, real.dtype)


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    atol = ATOL[dtype or want.dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=0, equal_nan=True)


class SoftmaxAs(torch.nn.Module):
    """softmax(x, -1, dtype=...): x arrives in one dtype, softmax sees another (None: x's own)."""

    def __init__(self, dtype: torch.dtype | None):
        super().__init__()
        self.dtype = dtype

    def forward(self, x):
        return torch.softmax(x, -1, dtype=self.dtype)


class FourSites(torch.nn.Module):
    """Attention-like scores with scale and mask producers, a dim-0 2-D, a 1-D and a middle-dim 4-D softmax."""

    def forward(self, s, mask, x2, x1, x4):
        a = torch.softmax(s * 0.125 + mask, -1)
        b = torch.softmax(x2, 0)
        c = torch.softmax(x1, 0)
        d = torch.softmax(x4, 1)
        return a, b, c, d


def four_site_args(dtype=torch.float32, seed=0, row=16):
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 4, 16, row), (2, 1, 1, row), (24, 40), (100,), (2, 6, 5, 7)]
    return tuple(torch.randn(s, generator=g).to(dtype) for s in shapes)
