"""Real widths, called the way users call models: a BERT-base-width encoder layer (hidden 768) and a
LLaMA-width decoder layer (hidden 2048), every preset on one of them and `auto` on both, on the real IREE CPU
runtime."""

from __future__ import annotations

import pytest
import torch

import fxsoftmax
from fxsoftmax.core.policy import parse_policy
from helpers import PRESETS

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.iree]
ENCODER_POLICIES = ("fused", "split", "split-sum", "inplace", "auto")  # with a padding mask
DECODER_POLICIES = ("remat", "per-step", "online", "auto")  # with input ids alone
assert {*ENCODER_POLICIES, *DECODER_POLICIES} == {"fused", *PRESETS, "inplace", "auto"}


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.BertConfig(num_hidden_layers=1, attn_implementation="eager")  # hidden 768, 12 heads
        self.bert = transformers.BertModel(cfg).eval()

    def forward(self, ids, mask=None):
        return self.bert(ids, attention_mask=mask).last_hidden_state


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            hidden_size=2048, intermediate_size=2816, num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=4,
            vocab_size=1000, use_cache=False, attn_implementation="eager",
        )
        self.llama = transformers.LlamaForCausalLM(cfg).eval()

    def forward(self, ids):
        return self.llama(ids).logits


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


@pytest.fixture(scope="module")
def decoder():
    return Decoder()


def _check(art, policy, got, want):
    assert (got - want).abs().max().item() <= 1e-4, policy
    return _check_plan(art)


def _check_plan(art):
    """One site, whose dispatches IREE made are the plan's."""
    report = fxsoftmax.inspect(art, stack=False)
    assert len(report.sites) == 1 and report.sites[0].matches_plan, report.sites[0].problem
    plan = parse_policy(art.sites[0].plan)
    if not plan.is_fused:
        assert len(report.sites[0].dispatches) == plan.dispatches
    return report


@pytest.mark.parametrize("policy", ENCODER_POLICIES)
def test_bert_base_width_layer_with_padding_mask(encoder, policy):
    ids = torch.randint(0, 30000, (1, 128), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 128, dtype=torch.int64)
    mask[0, -30:] = 0
    art = fxsoftmax.export(encoder, (ids, mask), policy=policy)
    with torch.no_grad():
        report = _check(art, policy, art(ids, mask), encoder(ids, mask))
    if policy in ("split", "split-sum"):  # the scale and the mask moved into the first group
        assert {"arith.mulf", "arith.addf"} <= set(report.sites[0].dispatches[0].other_ops)


@pytest.mark.parametrize("policy", ["split", "auto"])
def test_bert_base_width_input_ids_alone_dynamic_sequence(encoder, policy):
    seq = torch.export.Dim("seq", min=2, max=512)
    art = fxsoftmax.export(encoder, (torch.randint(0, 30000, (1, 64)),), policy=policy, dynamic_shapes=({1: seq},))
    for n in (7, 64, 200):
        ids = torch.randint(0, 30000, (1, n))
        with torch.no_grad():
            assert (art(ids) - encoder(ids)).abs().max().item() <= 1e-4, (policy, n)


@pytest.mark.parametrize("policy", DECODER_POLICIES)
def test_llama_width_layer_input_ids_alone(decoder, policy):
    """Called with input ids alone, transformers' mask code emits aten.diff, which IREE 3.9's importer
    cannot lower: export decomposes it with PyTorch's own decomposition and goes on."""
    ids = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(2))
    art = fxsoftmax.export(decoder, (ids,), policy=policy)
    with torch.no_grad():
        _check(art, policy, art(ids), decoder(ids))


@pytest.mark.parametrize("policy", ["inplace", "auto"])
def test_bert_base_width_bfloat16_layer_with_padding_mask(encoder, policy):
    """A bf16 model: `inplace` keeps z rounded to bf16 in the output; the layer stays as close to the float32
    model as eager bf16 does (within 2x its error)."""
    ids = torch.randint(0, 30000, (2, 64), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 64, dtype=torch.int64)
    mask[1, 40:] = 0
    model = Encoder().to(torch.bfloat16)
    art = fxsoftmax.export(model, (ids, mask), policy=policy)
    with torch.no_grad():
        exact, eager, got = encoder(ids, mask), model(ids, mask).float(), art(ids, mask)
    assert got.dtype == torch.bfloat16
    assert (got.float() - exact).abs().max().item() <= 2 * (eager - exact).abs().max().item()
    _check_plan(art)
    assert policy == "auto" or art.sites[0].plan == "inplace"


def _export_over_a_dynamic_sequence(model, vocab):
    """`model` exported with every argument at its default but a dynamic sequence, traced on 64 input ids."""
    seq = torch.export.Dim("seq", min=2, max=512)
    return fxsoftmax.export(model, (torch.randint(0, vocab, (1, 64)),), dynamic_shapes=({1: seq},))


def _matches_eager_on_input_ids(art, model, vocab, lengths, output):
    """The module's `output` field within 1e-4 of eager's, called with input ids alone of each length."""
    for n in lengths:
        ids = torch.randint(0, vocab, (1, n))
        with torch.no_grad():
            assert (getattr(art(ids), output) - getattr(model(ids), output)).abs().max().item() <= 1e-4, n


# As transformers builds them by default (SDPA attention, `grouped_mm` MoE experts), exported with every
# argument at its default and called with input ids alone, over a dynamic sequence.
def test_default_bert_base_width_dynamic_sequence():
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(num_hidden_layers=1)).eval()
    assert model.config._attn_implementation == "sdpa"
    art = _export_over_a_dynamic_sequence(model, 30000)
    assert [s.status for s in art.sites] == ["rewritten"] and "decomposed" in art.attention
    _matches_eager_on_input_ids(art, model, 30000, (7, 200), "last_hidden_state")


def test_default_mixtral_width_1024_dynamic_sequence():
    """8 experts, top 2, hidden 1024: transformers' default experts go through fxsoftmax's rewrites of
    aten.histc and the grouped matmul (fxsoftmax/backends/rewrites.py)."""
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(hidden_size=1024, intermediate_size=2048, num_hidden_layers=1, num_attention_heads=16,
                                     num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2, vocab_size=1000, use_cache=False)
    model = transformers.MixtralForCausalLM(cfg).eval()
    art = _export_over_a_dynamic_sequence(model, 1000)
    assert [s.status for s in art.sites] == ["rewritten", "rewritten"]  # attention and the router
    _matches_eager_on_input_ids(art, model, 1000, (9, 100), "logits")


def _default_llama_width():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=2048, intermediate_size=2816, num_hidden_layers=1, num_attention_heads=32,
                                   num_key_value_heads=4, vocab_size=1000)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_default_llama_width_returns_its_cache_refused_with_the_way_out():
    """A decoder built with transformers' defaults returns its KV cache (a DynamicCache), which torch.export cannot
    flatten: a ValueError says so and what to do."""
    model = _default_llama_width()
    assert model.config.use_cache
    with pytest.raises(ValueError, match=r"returns a transformers\.cache_utils\.DynamicCache.*model\.config\.use_cache = False"):
        fxsoftmax.export(model, (torch.randint(0, 1000, (1, 16)),))


def test_default_llama_width_without_its_cache_dynamic_sequence():
    """Done as the refusal above says (use_cache off), the default decoder exports with input ids alone over a
    dynamic sequence and matches eager."""
    model = _default_llama_width()
    model.config.use_cache = False
    art = _export_over_a_dynamic_sequence(model, 1000)
    assert [s.status for s in art.sites] == ["rewritten"] and "decomposed" in art.attention
    _matches_eager_on_input_ids(art, model, 1000, (3, 100), "logits")
