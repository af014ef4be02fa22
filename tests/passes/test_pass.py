"""The FX pass: every softmax form, dims, dtypes, meta validity and numerics against eager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fxsoftmax
from fxsoftmax.core.group import GroupSpec
from fxsoftmax.core.op import GROUP_OPS
from fxsoftmax.core.policy import parse_policy
from helpers import PRESETS, assert_close, assert_meta_matches_execution, aten, aten_graph, count

pytestmark = pytest.mark.iree

SHAPES = [(37,), (5, 37), (2, 3, 5, 37)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def dims_for(shape):
    return sorted({-1, 0} | ({len(shape) // 2} if len(shape) >= 3 else set()))


CASES = [(s, d) for s in SHAPES for d in dims_for(s)]
# Each (shape, dim) case runs every dtype; presets rotate across cases so every preset meets every rank.
PRESET_OF = {case: PRESETS[i % len(PRESETS)] for i, case in enumerate(CASES)}


def _input(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


ATEN_FORMS = {
    "aten.softmax.int": (lambda d: lambda x: aten.softmax.int(x, d), lambda x, d: torch.softmax(x, d)),
    "aten.softmax.int dtype=f32": (
        lambda d: lambda x: aten.softmax.int(x, d, torch.float32),
        lambda x, d: torch.softmax(x, d, dtype=torch.float32),
    ),
    "aten._softmax": (lambda d: lambda x: aten._softmax.default(x, d, False), lambda x, d: torch.softmax(x, d)),
    "aten._safe_softmax": (lambda d: lambda x: aten._safe_softmax.default(x, d), lambda x, d: aten._safe_softmax.default(x, d)),
}


@pytest.mark.parametrize("form", list(ATEN_FORMS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, dim", CASES, ids=str)
def test_aten_forms_rewritten_and_match_eager(form, dtype, shape, dim):
    make, ref = ATEN_FORMS[form]
    x = _input(shape, dtype)
    gm = aten_graph(make(dim), x)
    want = ref(x, dim)
    policy = PRESET_OF[(shape, dim)]
    gm2, sites = fxsoftmax.decompose_softmax(gm, policy)
    assert gm2 is gm
    assert [s.status for s in sites] == ["rewritten"] and sites[0].plan == policy
    assert sites[0].dim == dim % len(shape) and sites[0].form == form.split(" ")[0]
    for op in (aten.softmax.int, aten._softmax.default, aten._safe_softmax.default):
        assert count(gm, op) == 0
    gm.graph.lint()
    assert_meta_matches_execution(gm, x)
    got = gm(x)
    assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_to_float_gives_f32(dtype):
    x = _input((4, 33), dtype)
    gm = aten_graph(lambda t: aten._softmax.default(t, 1, True), torch.empty(4, 33, dtype=dtype))
    fxsoftmax.decompose_softmax(gm, "split")
    got = gm(x)
    # Eager CPU refuses half_to_float; the reference is the f32 softmax of the same values.
    assert got.dtype == torch.float32
    assert_close(got, torch.softmax(x.float(), 1))


def test_dtype_argument_casts_before_softmax():
    x = _input((3, 50), torch.float32) * 8
    gm = aten_graph(lambda t: aten.softmax.int(t, -1, torch.float16), x)
    fxsoftmax.decompose_softmax(gm, "split-sum")
    assert_close(gm(x), torch.softmax(x, -1, dtype=torch.float16))


def test_safe_softmax_fully_masked_rows_are_zero():
    x = _input((4, 3, 8), torch.float32)
    x[1, 2] = float("-inf")
    x[3, :, 5] = float("-inf")
    for preset in PRESETS:
        gm = aten_graph(lambda t: aten._safe_softmax.default(t, -1), x)
        fxsoftmax.decompose_softmax(gm, preset)
        got = gm(x)
        assert torch.equal(got[1, 2], torch.zeros(8)), preset
        assert not got.isnan().any()
        assert_close(got, aten._safe_softmax.default(x, -1))


def test_plain_softmax_keeps_nan_for_fully_masked_rows_like_eager():
    x = torch.full((2, 4), float("-inf"))
    x[0] = torch.arange(4.0)
    gm = aten_graph(lambda t: aten.softmax.int(t, -1), x)
    fxsoftmax.decompose_softmax(gm, "split")
    assert_close(gm(x), torch.softmax(x, -1))
    assert gm(x)[1].isnan().all()


# Presets whose later groups never read x again: the scale producer moves into the first group.
PULLS_PRODUCERS = {"remat": False, "split": True, "split-sum": True, "per-step": False, "online": False}


@pytest.mark.parametrize("preset", PRESETS)
def test_ops_before_and_after(preset):
    x = _input((2, 4, 16), torch.float32)
    gm = aten_graph(lambda t: aten.softmax.int(t * 2.0, -1) + 1, x)
    assert count(gm, aten.softmax.int) == 1 and count(gm, aten.mul.Tensor) == 1
    fxsoftmax.decompose_softmax(gm, preset)
    plan = parse_policy(preset)
    groups = [n for n in gm.graph.nodes if n.target in GROUP_OPS.values()]
    specs = [GroupSpec.from_json(n.args[-1]) for n in groups]
    assert count(gm, aten.softmax.int) == 0
    assert [list(s.steps) for s in specs] == [list(g) for g in plan.groups] and len(groups) == plan.dispatches
    pulled = PULLS_PRODUCERS[preset]
    assert count(gm, aten.mul.Tensor) == (0 if pulled else 1)
    assert (specs[0].chain == (("mul", "float32", "p0", 2.0),)) == pulled
    # a value crosses groups only where the plan stores it; the last group writes y alone
    assert specs[-1].outputs == ("y",)
    stored = {"m" if n == 1 else "z" if n == 2 else "l" for n in plan.stored()}
    assert {o for s in specs[:-1] for o in s.outputs} == stored
    assert_close(gm(x), torch.softmax(x * 2.0, -1) + 1)


def test_producers_read_elsewhere_stay_in_the_graph():
    x = _input((2, 4, 16), torch.float32)
    gm = aten_graph(lambda t: (lambda s: aten.softmax.int(s, -1) + s)(t * 2.0), x)
    fxsoftmax.decompose_softmax(gm, "split")
    first = next(n for n in gm.graph.nodes if n.target in GROUP_OPS.values())
    assert GroupSpec.from_json(first.args[-1]).chain == () and count(gm, aten.mul.Tensor) == 1
    assert_close(gm(x), torch.softmax(x * 2.0, -1) + x * 2.0)


def test_mask_and_softcap_producers_are_pulled_in():
    scores, mask = _input((1, 2, 8, 8), torch.float32), torch.rand(1, 1, 1, 8) > 0.3

    def f(s, m):
        s = torch.tanh(s / 30.0) * 30.0
        return aten.softmax.int(torch.where(m.expand(1, 2, 8, 8), s, torch.finfo(torch.float32).min), -1)

    gm = aten_graph(f, scores, mask)
    fxsoftmax.decompose_softmax(gm, "split-sum")
    first = next(n for n in gm.graph.nodes if n.target in GROUP_OPS.values())
    ops = [i[0] for i in GroupSpec.from_json(first.args[-1]).chain]
    assert ops == ["div", "tanh", "mul", "where"]
    assert not any(n.target in (aten.tanh.default, aten.expand.default) for n in gm.graph.nodes)
    assert_close(gm(scores, mask), f(scores, mask))


def test_fused_leaves_softmax_alone_and_reports_it():
    x = _input((2, 16), torch.float32)
    gm = aten_graph(lambda t: aten.softmax.int(t, -1), x)
    result = fxsoftmax.decompose_softmax(gm, "fused")
    assert result.rewritten == 0 and result.sites[0].status == "fused"
    assert count(gm, aten.softmax.int) == 1


# --- torch-level graphs (torch.fx.symbolic_trace): functions, methods and modules -------------------


class TorchLevel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sm = torch.nn.Softmax(dim=1)
        self.sm2d = torch.nn.Softmax2d()
        self.legacy = torch.nn.Softmax()  # dim=None: PyTorch's legacy rule picks dim 1 for 4-D

    def forward(self, x):
        a = torch.softmax(x, -1)
        b = F.softmax(x, dim=0)
        c = x.softmax(2, dtype=torch.float32)
        d = self.sm(x)
        e = self.sm2d(x)
        f = torch.special.softmax(x, 1)
        g = self.legacy(x)
        return a, b, c, d, e, f, g


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_level_forms(dtype):
    model = TorchLevel()
    x = _input((2, 3, 4, 9), dtype)
    want = model(x)
    gm = torch.fx.symbolic_trace(model)
    result = fxsoftmax.decompose_softmax(gm, "split", example_inputs=(x,))
    forms = [s.form for s in result.sites]
    assert forms == ["torch.softmax", "F.softmax", "Tensor.softmax", "nn.Softmax", "nn.Softmax2d", "torch.special.softmax", "nn.Softmax"]
    assert [s.dim for s in result.sites] == [3, 0, 2, 1, 1, 1, 1]
    assert result.rewritten == 7
    assert not any(n.op == "call_module" for n in gm.graph.nodes)
    assert not any(n.op == "call_method" and n.target == "softmax" for n in gm.graph.nodes)
    gm.graph.lint()
    for got, ref in zip(gm(x), want):
        assert_close(got, ref)


def test_torch_level_graph_without_meta_is_skipped_with_reason():
    gm = torch.fx.symbolic_trace(lambda x: torch.softmax(x, -1))
    result = fxsoftmax.decompose_softmax(gm, "split")
    assert result.sites[0].status == "skipped" and "example_inputs" in result.sites[0].reason


def test_non_float_input_left_untouched():
    gm = torch.fx.symbolic_trace(lambda x: F.softmax(x, -1, dtype=torch.float32))
    x = torch.randint(0, 5, (3, 4))
    result = fxsoftmax.decompose_softmax(gm, "split", example_inputs=(x,))
    assert result.sites[0].status == "skipped" and "non-float" in result.sites[0].reason
    assert result.rewritten == 0
    assert_close(gm(x), F.softmax(x, -1, dtype=torch.float32))


def test_exported_program_is_rewritten_and_still_runs():
    class M(torch.nn.Module):
        def forward(self, x, mask):
            return torch.softmax(x * 0.125 + mask, -1)

    x, mask = _input((2, 4, 8, 8), torch.float32), _input((2, 4, 8, 8), torch.float32, seed=1)
    ep = torch.export.export(M(), (x, mask))
    ep2, sites = fxsoftmax.decompose_softmax(ep, "remat")
    assert ep2 is ep and sites[0].module_path == "" and sites[0].status == "rewritten"
    assert_close(ep.module()(x, mask), M()(x, mask))


def test_dynamic_dim_survives_the_pass():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, 1)

    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(M(), (_input((4, 16), torch.float32),), dynamic_shapes=({0: batch},))
    fxsoftmax.decompose_softmax(ep, "per-step")
    for node in ep.graph.nodes:
        if node.op == "call_function":
            assert isinstance(node.meta["val"].shape[0], torch.SymInt), node.name
    for b in (1, 7):
        x = _input((b, 16), torch.float32)
        assert_close(ep.module()(x), torch.softmax(x, 1))


def test_override_by_module_path_in_exported_model():
    class Block(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Block(), Block()])

        def forward(self, x):
            return self.layers[1](self.layers[0](x))

    ep = torch.export.export(M(), (_input((3, 8), torch.float32),))
    result = fxsoftmax.decompose_softmax(ep, "split", {"layers.1": "remat"})
    assert [(s.module_path, s.plan) for s in result.sites] == [("layers.0", "split"), ("layers.1", "remat")]
    with pytest.raises(ValueError, match="matched no softmax site"):
        fxsoftmax.decompose_softmax(torch.export.export(M(), (_input((3, 8), torch.float32),)), "split", {"decoder.*": "remat"})


def test_bad_module_type():
    with pytest.raises(TypeError, match="GraphModule or torch.export.ExportedProgram"):
        fxsoftmax.decompose_softmax(torch.nn.Linear(2, 2), "split")


@pytest.mark.parametrize("preset", PRESETS)
def test_zero_size_dims_rewrite_and_give_an_empty_result(preset):
    for shape, dim in [((5, 0, 0), -1), ((0, 7), -1), ((3, 0, 4), 1)]:
        x = torch.randn(shape)
        gm = aten_graph(lambda t: aten.softmax.int(t, dim), x)
        assert fxsoftmax.decompose_softmax(gm, preset).rewritten == 1
        assert gm(x).shape == torch.softmax(x, dim).shape


@pytest.mark.parametrize("dynamic_query", [False, True])
def test_attention_decomposed_for_prefill_and_kept_for_a_decode_step(dynamic_query):
    """attention="auto" on cuda: an SDPA whose query holds one position (a decode step) stays one attention op;
    the others (causal with scale=, GQA, a mask; static or dynamic query length) become matmuls and a
    `_safe_softmax` that match eager."""
    from fxsoftmax.passes.attention import attention_decompositions

    class Attention(torch.nn.Module):
        def forward(self, step, q, k, v, kv, mask):
            return (F.scaled_dot_product_attention(step, k, v),
                    F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3),
                    F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True),
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    g = torch.Generator().manual_seed(0)
    step, q, k, v, kv = (torch.randn(s, generator=g) for s in [(1, 4, 1, 8), (1, 4, 5, 8), (1, 4, 6, 8), (1, 4, 6, 8), (1, 2, 6, 8)])
    args = (step, q, k, v, kv, torch.rand(1, 1, 1, 6, generator=g) > 0.3)
    dynamic = (None, {2: torch.export.Dim("length", min=2, max=64)}, None, None, None, None) if dynamic_query else None
    ep = torch.export.export(Attention(), args, dynamic_shapes=dynamic)
    ep = ep.run_decompositions(attention_decompositions("decompose-prefill"))
    assert count(ep.graph_module, aten.scaled_dot_product_attention.default) == 1
    assert count(ep.graph_module, aten._safe_softmax.default) == 3
    for got, want in zip(ep.module()(*args), Attention()(*args)):
        assert_close(got, want)
