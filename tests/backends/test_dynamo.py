"""The torch.compile backend: registration, options, graph breaks, shapes and recompiles, fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import fxsoftmax


class Attention(torch.nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return torch.softmax(q @ k.transpose(-1, -2) * 0.25, -1) @ v


def test_registered_as_dynamo_backend():
    assert "fxsoftmax" in torch._dynamo.list_backends()


def test_string_backend_with_options_matches_eager():
    model = Attention().eval()
    x = torch.randn(2, 8, 16)
    before = len(fxsoftmax.compiled_graphs())
    compiled = torch.compile(model, backend="fxsoftmax", options={"policy": "remat", "device": "cpu"})
    with torch.no_grad():
        got, want = compiled(x), model(x)
    assert (got - want).abs().max().item() <= 1e-5
    graphs = fxsoftmax.compiled_graphs()[before:]
    assert len(graphs) == 1
    assert [(s.status, s.plan) for s in graphs[0].sites] == [("rewritten", "remat")]
    site = fxsoftmax.inspect(graphs[0], stack=False).sites[0]
    assert site.matches_plan and len(site.dispatches) == 3
    # a summary, not the module's MLIR
    assert repr(graphs) == "[CompiledGraph(graph 0: 1 softmax site(s), plans ['remat'], runs on IREE cpu:host)]"


class TwoBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = Attention(), Attention()

    def forward(self, x):
        y = self.a(x)
        torch._dynamo.graph_break()
        return self.b(y) + 1


def test_graph_breaks_compile_each_graph():
    model = TwoBlocks().eval()
    x = torch.randn(1, 8, 16)
    be = fxsoftmax.backend(policy="split-sum")
    with torch.no_grad():
        got, want = torch.compile(model, backend=be)(x), model(x)
    assert (got - want).abs().max().item() <= 1e-5
    assert len(be.graphs) == 2
    for graph in be.graphs:
        assert [s.status for s in graph.sites] == ["rewritten"]
        assert fxsoftmax.inspect(graph, stack=False).sites[0].matches_plan


@pytest.mark.parametrize(
    "dynamic, compiles",
    [
        (False, [1, 1, 2, 3]),  # every new shape recompiles
        (None, [1, 1, 2, 2]),  # the second shape makes dynamo go dynamic; later sizes reuse that graph
        (True, [1, 1, 1, 1]),  # one graph serves every size
    ],
)
def test_new_shapes_recompile_or_not(dynamic, compiles):
    model = Attention().eval()
    be = fxsoftmax.backend(policy="split")
    compiled = torch.compile(model, backend=be, dynamic=dynamic)
    seen = []
    for n in (8, 8, 12, 20):  # the repeat of 8 must not recompile
        x = torch.randn(2, n, 16)
        with torch.no_grad():
            assert (compiled(x) - model(x)).abs().max().item() <= 1e-5
        seen.append(len(be.graphs))
    assert seen == compiles
    if dynamic:
        assert "?" in "".join(be.graphs[-1].artifact.mlir.split("func.func @main")[1].split("\n")[0])


class Sdpa(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=0.3)


@pytest.mark.parametrize("attention, status", [("keep", "kept"), ("decompose", "rewritten")])
def test_attention_kept_or_decomposed(attention, status):
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    be = fxsoftmax.backend(policy="split", attention=attention)
    got = torch.compile(Sdpa(), backend=be)(q, k, v)
    assert (got - Sdpa()(q, k, v)).abs().max().item() <= 1e-5
    sites = be.graphs[0].sites
    assert [s.status for s in sites] == [status]
    if status == "kept":
        assert sites[0].form == "aten.scaled_dot_product_attention" and "attention kernel" in sites[0].reason
    else:
        assert sites[0].form == "aten._safe_softmax"


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"polcy": "split"}, "unknown fxsoftmax option(s) ['polcy']; accepted: policy"),
        ({"device": "tpu"}, "unknown device 'tpu'; accepted: cpu, cuda, hip, vulkan"),
        ({"attention": "fuse"}, "unknown attention mode 'fuse'; accepted: auto, keep, decompose"),
        ({"fallback": "inductor"}, "unknown fallback 'inductor'; accepted: None, 'eager'"),
        ({"policy": "fastest"}, "unknown policy 'fastest'"),
    ],
)
def test_bad_options_are_clear(options, needle):
    with pytest.raises(ValueError) as e:
        fxsoftmax.backend(**options)
    assert needle in str(e.value)
    with pytest.raises(Exception) as e:
        torch.compile(Attention(), backend="fxsoftmax", options=options)(torch.randn(1, 4, 16))
    assert needle in str(e.value)


class MedianThenSoftmax(torch.nn.Module):
    """IREE 3.9 cannot compile aten.median (its importer leaves a torch.operator)."""

    def forward(self, x):
        y = torch.softmax(x, -1) * 2
        torch._dynamo.graph_break()
        return torch.softmax(torch.median(y, -1, keepdim=True).values * y, -1)


def test_uncompilable_graph_names_graph_and_iree_diagnostic():
    with pytest.raises(Exception) as e:
        torch.compile(MedianThenSoftmax(), backend=fxsoftmax.backend())(torch.randn(2, 8))
    msg = str(e.value)
    assert "graph 1 of the compiled model" in msg
    assert "IREE's importer cannot lower aten.median and PyTorch has no decomposition for it" in msg


def test_fallback_eager_runs_that_graph_and_logs(caplog):
    x = torch.randn(2, 8)
    be = fxsoftmax.backend(policy="remat", fallback="eager")
    with caplog.at_level(logging.WARNING, logger="fxsoftmax"):
        got = torch.compile(MedianThenSoftmax(), backend=be)(x)
    assert (got - MedianThenSoftmax()(x)).abs().max().item() <= 1e-6
    assert [g.artifact is not None for g in be.graphs] == [True, False]
    assert be.graphs[1].fallback_reason and "graph 1 runs in eager" in caplog.text
    with pytest.raises(ValueError, match="runs in eager"):
        fxsoftmax.inspect(be.graphs[1])


def test_dynamic_true_zoo_families_in_one_process():
    """torch.compile(dynamic=True): dynamo hands unspecialized floats (eps, scaling) over as 0-d float64
    tensors; they are compiled in and checked on each call. Several models compile in one process; a
    model IREE 3.9 cannot run with a dynamic sequence (RoBERTa's position ids) fails with a clear error."""
    from fxsoftmax.tools.models import family_model

    for name in ("bert", "llama"):
        zm = family_model(name)
        torch._dynamo.reset()
        be = fxsoftmax.backend(policy="split")
        compiled = torch.compile(zm.model, backend=be, dynamic=True)
        for n in (8, 12, 5):
            ids = torch.randint(3, 250, (1, n))
            with torch.no_grad():
                assert (zm.output(compiled(ids)) - zm.output(zm.model(ids))).abs().max().item() <= 1e-5, (name, n)
        assert len(be.graphs) == 1, name
    zm = family_model("roberta")
    torch._dynamo.reset()
    with pytest.raises(Exception, match="cumsum along a dynamic dim"):
        torch.compile(zm.model, backend=fxsoftmax.backend(), dynamic=True)(torch.randint(3, 250, (1, 8)))
