"""A decode step with a static KV cache, the ExecuTorch path (transformers' TorchExportableModuleWithStaticCache):
the softmax over the cache is rewritten, the module keeps the cache between calls on IREE CPU, and each
position matches eager."""

from __future__ import annotations

import pytest
import torch

import fxsoftmax
from fxsoftmax import quirks
from fxsoftmax.tools.models import family_model
from fxsoftmax.tools.zoo import DECODE_CACHE, check_family, decode_step

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", fxsoftmax.PRESETS)
@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_decode_step_every_preset(name, policy):
    row = check_family(name, "decode", policy)
    assert row["ok"], row.get("trace", row["error"])
    assert row["sites"] == 1


def test_decode_step_moe_router_and_cache_softmax():
    row = check_family("mixtral", "decode", "split")
    assert row["ok"] and row["sites"] == 2, row.get("trace", row["error"])


def _steps(tokens):
    return [{"input_ids": torch.tensor([[t]]), "cache_position": torch.tensor([p])} for p, t in enumerate(tokens)]


@pytest.mark.iree
def test_the_module_keeps_its_cache_between_calls():
    zm = family_model("llama")
    art = fxsoftmax.export(decode_step(zm), (), _steps([5])[0], policy="split")
    (site,) = art.sites
    assert site.status == "rewritten" and site.shape[-1] == DECODE_CACHE  # the row is the whole cache
    # the 0-d write position is a parameter where IREE's bindings cannot inline it
    assert ("cumulative_length_0" in art.parameters) == quirks.needed(quirks.ZERO_D_STATE_FIXED_IN)
    first = [art(**s) for s in _steps([5, 17])]
    second = [art(**s) for s in _steps([9, 17])]  # restart at position 0 with another first token
    assert not torch.allclose(first[1], second[1])  # the same token at position 1 sees a different cache
    eager = decode_step(zm)
    want = [eager(**s) for s in _steps([9, 17])]
    assert max((g - w).abs().max().item() for g, w in zip(second, want)) <= 1e-4


def test_decode_step_at_llama_width():
    """Hidden 2048, 32 heads, 4 KV heads, one layer; a 64-long cache, 6 positions, under `auto` and `split`."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=1, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=1024, max_position_embeddings=128, attn_implementation="eager")
    model = tf.LlamaForCausalLM(cfg).eval()
    model.generation_config.use_cache = True
    model.generation_config.cache_implementation = "static"
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    steps = _steps([11, 402, 7, 999, 64, 3])
    eager = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=64)
    with torch.no_grad():
        want = [eager(**s) for s in steps]
    for policy in ("split", "auto"):
        art = fxsoftmax.export(TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=64), (), steps[0], policy=policy)
        (site,) = art.sites
        assert site.status in ("rewritten", "fused") and site.shape == (1, 32, 1, 64)
        err = max((art(**s) - w).abs().max().item() for s, w in zip(steps, want))
        assert err <= 1e-4, (policy, err)
