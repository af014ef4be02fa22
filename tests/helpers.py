"""Shared test helpers (graph builders and checks); no mocks of torch or IREE."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import make_fx

from fxsoftmax.backends import flags
from fxsoftmax.core import steps
from fxsoftmax.core.dtypes import dtype as dtype_info
from fxsoftmax.core.policy import CPU_CANDIDATES, Plan

aten = torch.ops.aten
PRESETS = CPU_CANDIDATES  # the presets IREE's codegen makes from fxsoftmax's groups
STACK_LIMIT = flags.stack_limit(4096)


def planned_steps(plan: Plan) -> list[list[str]]:
    """The plan's groups as the report reads them back from IREE (an online "13" as steps 1 and 3)."""
    return [sorted((s for t in g for s in (["1", "3"] if t == steps.ONLINE else [t])), key=steps.key) for g in plan.groups]


def pulls_producers(plan: Plan) -> bool:
    """Whether x's elementwise producers move into the first group: no later group reads x again."""
    return not plan.is_fused and not any("x" in steps.outside_reads(g) for g in plan.groups[1:])


def edge_rows() -> torch.Tensor:
    """Rows of 33 (not a multiple of the vector width) that stress the max step and exp."""
    x = torch.randn(8, 33, generator=torch.Generator().manual_seed(0))
    x[1] = float("-inf")  # fully masked
    x[2, ::2] = float("-inf")  # partly masked
    x[3] = torch.linspace(-3e38, 3e38, 33, dtype=torch.float64).float()  # x - max overflows to -inf
    x[4] = torch.finfo(torch.float32).min  # a padding row masked the Hugging Face way
    x[5] = x[5] - 1e6  # far below 0: exp(x) alone underflows
    x[6] = x[6] - 100.0
    x[7] = 1e4 * x[7]
    return x


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
    atol = dtype_info(dtype or want.dtype).tolerance
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
