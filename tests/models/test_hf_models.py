"""Hugging Face models (tiny configs, random weights, offline) through both entry points, every preset:
softmax sites found, outputs vs eager, and the dispatch count IREE produced vs `fused`.

Each test runs `fused` and one other preset, rotating, so that every preset meets every model, every attention
config and both entry points (pairwise). `pytest --every-preset` runs every preset in every test
(`make test-every-preset`)."""

from __future__ import annotations

import copy

import pytest
import torch

import fxsoftmax
from fxsoftmax.auto import AutoChooser
from fxsoftmax.backends.pipeline import Options, compile_program, export_program
from fxsoftmax.core.policy import parse_policy
from fxsoftmax.tools.models import TINY_MODELS, builtin_model
from helpers import PRESETS

pytestmark = pytest.mark.slow
ALL = ("fused", *PRESETS)
# (attn_implementation, fxsoftmax attention option)
CONFIGS = [("eager", "keep"), ("sdpa", "keep"), ("sdpa", "decompose")]


def _rotation(name, config, path) -> tuple[str]:
    """The preset the test of this model, config and path (0: export, 1: torch.compile) runs."""
    return (PRESETS[(TINY_MODELS.index(name) + 2 * CONFIGS.index(config) + path) % len(PRESETS)],)


def _presets(request, name, attn, attention, path) -> tuple[str, ...]:
    """`fused` first (the baseline), then this test's preset, or all with --every-preset."""
    if request.config.getoption("every_preset"):
        return ALL
    return ("fused", *_rotation(name, (attn, attention), path))


def test_the_rotation_meets_every_preset_with_every_model_config_and_path():
    runs = {(name, config, path, preset) for name in TINY_MODELS for config in CONFIGS for path in (0, 1)
            for preset in _rotation(name, config, path)}
    for axis, values in enumerate((TINY_MODELS, CONFIGS, (0, 1))):
        met = {(run[axis], run[3]) for run in runs}
        assert met == {(v, p) for v in values for p in PRESETS}, sorted({(v, p) for v in values for p in PRESETS} - met)


def _model(name, attn):
    tm = builtin_model(name, attn, layers=1)
    with torch.no_grad():
        ref = tm.output(tm.model(*tm.args, **tm.kwargs))
    return tm, ref


def _expect(tm, attn, attention):
    """Softmax sites the pass should rewrite, and fused attention ops it should keep."""
    if attn == "eager" or attention == "decompose":
        return tm.softmaxes, 0
    return 0, tm.softmaxes


def _check_sites(sites, preset, softmaxes, kept):
    status = [s.status for s in sites]
    if preset == "fused":
        assert status.count("fused") == softmaxes and status.count("rewritten") == 0, sites
    else:
        assert status.count("rewritten") == softmaxes and status.count("fused") == 0, sites
        assert all(s.plan == preset for s in sites if s.status == "rewritten")
    assert status.count("kept") == kept, sites
    assert all(s.form == "aten.scaled_dot_product_attention" for s in sites if s.status == "kept")


def _check_dispatches(reports, preset, fused):
    """Every rewritten site has exactly its plan's dispatches. Outside the sites the module keeps what
    `fused` had, give or take one dispatch per site: producers the first group takes in leave IREE's
    dispatches, and a mask they read may then be computed once in a small dispatch of its own.
    Returns (dispatches outside the sites, per-site counts) of `fused`."""
    assert all(s.matches_plan for r in reports for s in r.sites), [s.problem for r in reports for s in r.sites]
    per_site = {s.site: len(s.dispatches) for r in reports for s in r.sites}
    others = sum(r.total_dispatches for r in reports) - sum(per_site.values())
    if preset == "fused":
        return others, per_site
    base_others, base_sites = fused
    assert per_site.keys() == base_sites.keys()
    assert all(n == parse_policy(preset).dispatches for n in per_site.values()), (preset, per_site)
    assert abs(others - base_others) <= len(per_site), (preset, others, base_others)
    return fused


@pytest.mark.parametrize("attn, attention", CONFIGS)
@pytest.mark.parametrize("name", TINY_MODELS)
def test_export_path(request, name, attn, attention):
    tm, ref = _model(name, attn)
    softmaxes, kept = _expect(tm, attn, attention)
    exported = export_program(tm.model, tm.args, tm.kwargs, None, attention)
    baseline = None
    for preset in _presets(request, name, attn, attention, 0):
        art = compile_program(copy.deepcopy(exported), Options(preset, attention=attention), AutoChooser())
        _check_sites(art.sites, preset, softmaxes, kept)
        got = tm.output(art(*tm.args, **tm.kwargs))
        assert (got - ref).abs().max().item() <= 1e-4, preset
        baseline = _check_dispatches([fxsoftmax.inspect(art, stack=False)], preset, baseline)


@pytest.mark.parametrize("attn, attention", CONFIGS)
@pytest.mark.parametrize("name", TINY_MODELS)
def test_torch_compile_path(request, name, attn, attention):
    """One real torch.compile per preset would re-trace the model with dynamo five times for the same
    graphs; the first preset goes through torch.compile, the others get the graphs dynamo produced."""
    tm, ref = _model(name, attn)
    softmaxes, kept = _expect(tm, attn, attention)
    captured = []

    def capture(gm, example_inputs):
        be = fxsoftmax.backend(policy=ALL[0], attention=attention)
        captured.append((gm, list(example_inputs), be))
        return be(gm, example_inputs)

    torch._dynamo.reset()
    with torch.no_grad():
        got = tm.output(torch.compile(tm.model, backend=capture)(*tm.args, **tm.kwargs))
    baseline = None
    for preset in _presets(request, name, attn, attention, 1):
        if preset == ALL[0]:
            backends = [be for _, _, be in captured]
        else:
            backends = [fxsoftmax.backend(policy=preset, attention=attention) for _ in captured]
            runners = [be(gm, inputs) for (gm, inputs, _), be in zip(captured, backends)]
            with torch.no_grad():  # the dynamo graph's outputs come from the IREE module, as at run time
                got_graph = runners[-1](*captured[-1][1])
                want_graph = captured[-1][0](*captured[-1][1])
            for g, w in zip(got_graph, want_graph):
                assert (g - w).abs().max().item() <= 1e-4, preset
        graphs = [g for be in backends for g in be.graphs]
        assert graphs and all(g.artifact is not None for g in graphs)
        _check_sites([s for g in graphs for s in g.sites], preset, softmaxes, kept)
        if preset == ALL[0]:
            assert (got - ref).abs().max().item() <= 1e-4, preset
        baseline = _check_dispatches([fxsoftmax.inspect(g, stack=False) for g in graphs], preset, baseline)
