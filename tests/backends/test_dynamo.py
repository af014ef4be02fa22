"""The torch.compile backend: registration, options, graph breaks, shapes and recompiles, fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fxsoftmax
from fxsoftmax import quirks


class Attention(torch.nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return torch.softmax(q @ k.transpose(-1, -2) * 0.25, -1) @ v


def test_registered_as_dynamo_backend():
    """Installed, the package's entry point names the backend; dynamo resolves the name to it."""
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="torch_dynamo_backends") if p.name == "fxsoftmax"]
    assert point.load() is fxsoftmax.api.fxsoftmax_backend
    assert torch._dynamo.lookup_backend("fxsoftmax") is fxsoftmax.api.fxsoftmax_backend


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
    assert "IREE's importer cannot lower aten.median (at " in msg and "test_dynamo.py:" in msg
    assert "torch.median(y, -1, keepdim=True)" in msg and "nor PyTorch's decompositions lower it" in msg


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
    tensors; they are compiled in and checked on each call. Several models compile in one process. A model
    whose dynamic form IREE 3.9 cannot run (RoBERTa's position ids) is compiled once per set of shapes."""
    from fxsoftmax.tools.models import family_model

    for name in ("bert", "llama", "roberta"):
        zm = family_model(name)
        torch._dynamo.reset()
        be = fxsoftmax.backend(policy="split")
        compiled = torch.compile(zm.model, backend=be, dynamic=True)
        for n in (8, 12, 8):
            ids = torch.randint(3, 250, (1, n))
            with torch.no_grad():
                assert (zm.output(compiled(ids)) - zm.output(zm.model(ids))).abs().max().item() <= 1e-5, (name, n)
        assert len(be.graphs) == 1, name
        specialized = be.graphs[0].specialized
        if name == "roberta" and quirks.needed(quirks.CUMSUM_FIXED_IN):
            assert "cumsum along a dynamic dim" in specialized
            assert "per input shapes" in repr(be.graphs[0])
        else:
            assert specialized == "", name


def _whisper_encoder():
    from fxsoftmax.tools.models import family_model

    zm = family_model("whisper")
    return zm.model.get_encoder(), zm.args[0]


def test_whisper_encoder_under_dynamic_true(caplog):
    """IREE 3.9 crashes on the dynamic form of Whisper's encoder (quirks.DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN):
    the backend compiles it for the shapes at hand, says so in one line, and matches eager."""
    encoder, features = _whisper_encoder()
    torch._dynamo.reset()
    be = fxsoftmax.backend()
    with caplog.at_level(logging.WARNING, logger="fxsoftmax"), torch.no_grad():
        got, want = torch.compile(encoder, backend=be, dynamic=True)(features), encoder(features)
    assert (got.last_hidden_state - want.last_hidden_state).abs().max().item() <= 1e-4
    notes = [r.getMessage() for r in caplog.records if "compiled for each new set of input shapes" in r.getMessage()]
    assert len(notes) == len([g for g in be.graphs if g.specialized])
    if quirks.needed(quirks.DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN):
        assert notes and "crashed" in notes[0]


def test_whisper_encoder_after_another_model():
    """With the default dynamic=None, a model compiled for two sequence lengths makes dynamo hand later
    models' shared code over dynamic; Whisper's encoder compiled next still matches eager."""
    from fxsoftmax.tools.models import family_model

    torch._dynamo.reset()
    zm = family_model("roberta")
    compiled = torch.compile(zm.model, backend=fxsoftmax.backend())
    with torch.no_grad():
        for n in (8, 12):
            ids = torch.randint(3, 250, (1, n))
            assert (zm.output(compiled(ids)) - zm.output(zm.model(ids))).abs().max().item() <= 1e-5
        encoder, features = _whisper_encoder()
        got, want = torch.compile(encoder, backend=fxsoftmax.backend())(features), encoder(features)
    assert (got.last_hidden_state - want.last_hidden_state).abs().max().item() <= 1e-4


def _view_transpose_matmul():
    """The smallest program that crashes IREE 3.9 on a dynamic view, and the CPU flags it is compiled with."""
    from fxsoftmax.backends import flags
    from fxsoftmax.backends.targets import Target

    return (Path(__file__).parent.parent / "data" / "view_transpose_matmul.mlir").read_text(), flags.target_flags(Target("cpu"))


@pytest.mark.iree
def test_the_smallest_program_that_crashes_iree_on_a_dynamic_view():
    """The evidence for quirks.DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN: IREE 3.9 crashes on it, later IREE compiles it."""
    from fxsoftmax.backends.compiler import IreeCompileError, iree_compile

    mlir, cpu = _view_transpose_matmul()
    if quirks.needed(quirks.DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN):
        with pytest.raises(IreeCompileError) as e:
            iree_compile(mlir, cpu)
        assert e.value.crashed and f"crashed (signal {e.value.signal})" in str(e.value)
    else:
        assert iree_compile(mlir, cpu).output


@pytest.mark.iree
def test_a_crash_under_a_wrapper_script_is_named_with_its_signal(tmp_path, monkeypatch):
    """$IREE_TOOL_PATH may name a wrapper script around iree-compile: the shell then returns 128 + the signal that
    ended iree-compile, and the error still names the crash and the signal (on IREE 3.9; later IREE compiles the
    program through the wrapper)."""
    from iree.compiler.tools.binaries import find_tool

    from fxsoftmax.backends.compiler import IreeCompileError, iree_compile

    mlir, cpu = _view_transpose_matmul()
    wrapper = tmp_path / "iree-compile"
    wrapper.write_text(f'#!/bin/sh\ntouch "{tmp_path}/used"\n"{find_tool("iree-compile")}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("IREE_TOOL_PATH", str(tmp_path))
    if quirks.needed(quirks.DYNAMIC_VIEW_TRANSPOSE_MATMUL_FIXED_IN):
        with pytest.raises(IreeCompileError) as e:
            iree_compile(mlir, cpu)
        assert e.value.returncode > 128 and e.value.signal == e.value.returncode - 128
        assert e.value.crashed and f"crashed (signal {e.value.signal})" in str(e.value)
    else:
        assert iree_compile(mlir, cpu).output
    assert (tmp_path / "used").exists()


def test_places_in_dynamo_graph_code_are_named_by_their_model_lines():
    """An importer error names a node by its place in dynamo's generated code; the message the user sees
    names the model line instead, whatever follows it (a comma, " and", IREE's diagnostic after a colon)."""
    from fxsoftmax.backends.dynamo import _model_lines

    graphs = []

    class Model(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x.transpose(0, 1), -1)  # the model line

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.compile(Model(), backend=capture)(torch.randn(3, 4))
    node = next(n for n in graphs[0].graph.nodes if n.op == "call_method" and n.target == "transpose")
    place = f"(at <eval_with_key>.7:5: {node.name} = l_x_.transpose(0, 1))"
    for after in (": 'linalg.transpose' op dim(result, 2) = 1500", ", aten.y", " and aten.z", ""):
        named = _model_lines(f"IREE's importer failed on aten.permute {place}{after}", graphs[0])
        assert "<eval_with_key>" not in named and "test_dynamo.py" in named and "the model line" in named and named.endswith(after)
