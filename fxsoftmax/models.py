"""Built-in tiny Hugging Face models (built from configs, random weights, nothing downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class TinyModel:
    """A model, example inputs, how many attention softmaxes it has, and where its main output is."""

    name: str
    model: torch.nn.Module
    args: tuple
    kwargs: dict
    attention_layers: int  # one softmax per attention layer (eager attention)
    output: Callable[[Any], torch.Tensor]  # logits / last hidden state from the model's output


def _hf(name: str, attn: str, seq: int, seed: int, layers: int) -> TinyModel:
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(attn_implementation=attn)
    ids = torch.randint(3, 250, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    mask[0, -max(1, seq // 4):] = 0  # padded tail: the attention mask matters
    small = dict(vocab_size=256, max_position_embeddings=64)

    if name == "bert-tiny":
        cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, **small, **common)
        m, kw, n, out = tf.BertModel(cfg), {"attention_mask": mask}, layers, lambda o: o.last_hidden_state
    elif name == "distilbert-tiny":
        cfg = tf.DistilBertConfig(dim=32, n_layers=layers, n_heads=2, hidden_dim=64, **small, **common)
        m, kw, n, out = tf.DistilBertModel(cfg), {"attention_mask": mask}, layers, lambda o: o.last_hidden_state
    elif name == "gpt2-tiny":
        cfg = tf.GPT2Config(
            vocab_size=256, n_positions=64, n_embd=32, n_layer=layers, n_head=2, use_cache=False, bos_token_id=0,
            eos_token_id=0, **common,
        )
        m, kw, n, out = tf.GPT2LMHeadModel(cfg), {"attention_mask": mask}, layers, lambda o: o.logits
    elif name == "llama-tiny":
        cfg = tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            use_cache=False, **small, **common,
        )
        m, kw, n, out = tf.LlamaForCausalLM(cfg), {"attention_mask": mask}, layers, lambda o: o.logits
    elif name == "vit-tiny":
        cfg = tf.ViTConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
            **common,
        )
        pixels = torch.randn(1, 3, 32, 32)
        return TinyModel(name, tf.ViTModel(cfg).eval(), (pixels,), {}, layers, lambda o: o.last_hidden_state)
    elif name == "bart-tiny":
        cfg = tf.BartConfig(
            d_model=32, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, use_cache=False, **small, **common,
        )
        dec = torch.randint(3, 250, (1, max(2, seq // 2)))
        kw = {"attention_mask": mask, "decoder_input_ids": dec}
        # encoder self-attention, decoder self-attention, decoder cross-attention
        m, n, out = tf.BartModel(cfg), 3 * layers, lambda o: o.last_hidden_state
    else:
        raise ValueError(f"unknown built-in model {name!r}; accepted: {', '.join(BUILTIN_MODELS)}")
    return TinyModel(name, m.eval(), (ids,), kw, n, out)


BUILTIN_MODELS = {
    "bert-tiny": "BERT encoder, 2 layers, hidden 32",
    "distilbert-tiny": "DistilBERT encoder, 2 layers, hidden 32",
    "gpt2-tiny": "GPT-2 LM head, 2 layers, hidden 32 (causal mask)",
    "llama-tiny": "LLaMA causal LM, 2 layers, hidden 32, grouped-query attention",
    "vit-tiny": "ViT encoder on 32x32 images, patch 8, 2 layers",
    "bart-tiny": "BART encoder-decoder, 2+2 layers (6 attention softmaxes)",
}


def tiny_model(name: str, attn: str = "eager", seq: int = 8, seed: int = 0, layers: int = 2) -> TinyModel:
    """A built-in tiny model; `attn` is Hugging Face's attn_implementation ("eager" or "sdpa")."""
    if attn not in ("eager", "sdpa"):
        raise ValueError(f"unknown attn_implementation {attn!r}; accepted: eager, sdpa")
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; accepted: {', '.join(BUILTIN_MODELS)}")
    return _hf(name, attn, seq, seed, layers)
