"""Built-in Hugging Face models, tiny and real-size (built from configs, random weights, nothing downloaded)."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    elif name == "bert-base":
        cfg = tf.BertConfig(attn_implementation=attn)  # BERT-base: 12 layers, hidden 768, 12 heads
        ids = torch.randint(3, cfg.vocab_size, (1, seq))
        m, kw, n, out = tf.BertModel(cfg), {"attention_mask": mask}, cfg.num_hidden_layers, lambda o: o.last_hidden_state
    elif name == "llama-2048":
        cfg = tf.LlamaConfig(
            hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=4,
            vocab_size=32000, max_position_embeddings=2048, use_cache=False, **common,
        )
        ids = torch.randint(3, cfg.vocab_size, (1, seq))
        m, kw, n, out = tf.LlamaForCausalLM(cfg), {}, layers, lambda o: o.logits
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
    "bert-base": "BERT-base encoder at real size: 12 layers, hidden 768, 12 heads (110M parameters)",
    "llama-2048": "LLaMA decoder at TinyLlama width: hidden 2048, 32 heads, 4 KV heads, 2 layers, called with input ids alone",
}


TINY_MODELS = tuple(name for name in BUILTIN_MODELS if name.endswith("-tiny"))


def tiny_model(name: str, attn: str = "eager", seq: int = 8, seed: int = 0, layers: int = 2) -> TinyModel:
    """A built-in model; `attn` is Hugging Face's attn_implementation ("eager" or "sdpa")."""
    if attn not in ("eager", "sdpa"):
        raise ValueError(f"unknown attn_implementation {attn!r}; accepted: eager, sdpa")
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; accepted: {', '.join(BUILTIN_MODELS)}")
    return _hf(name, attn, seq, seed, layers)


# --- model sources for the command line: a built-in name, a local checkpoint folder, or module:callable ---

_DTYPES = {
    "float32": torch.float32, "f32": torch.float32, "float16": torch.float16, "f16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64, "f64": torch.float64,
    "int64": torch.int64, "i64": torch.int64, "int32": torch.int32, "i32": torch.int32, "bool": torch.bool,
}


@dataclass(frozen=True)
class InputSpec:
    """A random example input: shape, dtype, and for integers the range [low, high)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    low: int = 0
    high: int = 64

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """'8x128:int64', '1x3x32x32:float32', '8x128:int64:0-1000'."""
        parts = text.split(":")
        accepted = "SHAPE:DTYPE[:LOW-HIGH], e.g. 8x128:int64 or 1x3x224x224:float32 or 8x128:int64:0-30522"
        if len(parts) not in (2, 3):
            raise ValueError(f"input spec {text!r} is not {accepted}")
        try:
            shape = tuple(int(d) for d in parts[0].lower().split("x"))
        except ValueError:
            raise ValueError(f"input spec {text!r}: shape {parts[0]!r} is not sizes joined by 'x'; accepted: {accepted}") from None
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"input spec {text!r}: sizes must be positive; accepted: {accepted}")
        if parts[1] not in _DTYPES:
            raise ValueError(f"input spec {text!r}: unknown dtype {parts[1]!r}; accepted: {', '.join(_DTYPES)}")
        low, high = 0, 64
        if len(parts) == 3:
            try:
                low, high = (int(v) for v in parts[2].split("-"))
            except ValueError:
                raise ValueError(f"input spec {text!r}: range {parts[2]!r} is not LOW-HIGH; accepted: {accepted}") from None
        return cls(shape, _DTYPES[parts[1]], low, high)

    def __str__(self) -> str:
        name = next(k for k, v in _DTYPES.items() if v == self.dtype)
        rng = f":{self.low}-{self.high}" if not self.dtype.is_floating_point and self.dtype != torch.bool else ""
        return "x".join(map(str, self.shape)) + f":{name}{rng}"

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=generator).to(self.dtype)
        if self.dtype == torch.bool:
            return torch.randint(0, 2, self.shape, generator=generator).bool()
        return torch.randint(self.low, self.high, self.shape, generator=generator, dtype=self.dtype)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    args: tuple
    kwargs: dict
    description: str


def load_model(
    source: str, inputs: Sequence[InputSpec] = (), *, attn: str = "eager", seq: int = 16, seed: int = 0
) -> LoadedModel:
    """A model and example inputs from a built-in name, a local Hugging Face checkpoint folder (nothing is
    downloaded), or 'module:callable' returning an nn.Module (then `inputs` gives its positional inputs).
    The same source, seed and specs give the same weights and inputs again."""
    if source in BUILTIN_MODELS:
        if inputs:
            raise ValueError(f"built-in model {source!r} makes its own inputs; --input is for module:callable models")
        tm = tiny_model(source, attn, seq=seq, seed=seed)
        return LoadedModel(tm.model, tm.args, tm.kwargs, f"built-in {source}: {BUILTIN_MODELS[source]}")
    if os.path.isdir(source):
        return _load_checkpoint(source, attn, seq, seed)
    if ":" in source and not os.path.exists(source):
        return _load_callable(source, inputs, seed)
    raise ValueError(
        f"model {source!r} is neither a built-in name ({', '.join(BUILTIN_MODELS)}), a local checkpoint folder, "
        "nor module:callable"
    )


def _load_callable(source: str, inputs: Sequence[InputSpec], seed: int) -> LoadedModel:
    module_name, _, attr = source.partition(":")
    if not inputs:
        raise ValueError(f"model {source!r} needs its inputs: give --input SHAPE:DTYPE once per positional input")
    if os.getcwd() not in sys.path:  # as `python -m` would: modules next to where the user runs us
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {source!r}: {e}") from None
    torch.manual_seed(seed)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{source} returned a {type(model).__name__}, not a torch.nn.Module")
    g = torch.Generator().manual_seed(seed)
    return LoadedModel(model.eval(), tuple(s.sample(g) for s in inputs), {}, f"{source}()")


def _load_checkpoint(path: str, attn: str, seq: int, seed: int) -> LoadedModel:
    import transformers as tf

    tf.utils.logging.disable_progress_bar()  # the CLI reports its own progress
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = (config.architectures or [None])[0]
    cls = getattr(tf, arch, None) if arch else None
    cls = cls or tf.AutoModel
    model = cls.from_pretrained(path, local_files_only=True, attn_implementation=attn)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    g = torch.Generator().manual_seed(seed)
    if hasattr(config, "image_size") and hasattr(config, "num_channels"):
        size = config.image_size
        args = (torch.randn((1, config.num_channels, size, size), generator=g),)
        kwargs = {}
    else:
        vocab = getattr(config, "vocab_size", 64)
        ids = torch.randint(0, vocab, (1, seq), generator=g)
        args, kwargs = (ids,), {"attention_mask": torch.ones(1, seq, dtype=torch.int64)}
        if getattr(config, "is_encoder_decoder", False):
            kwargs["decoder_input_ids"] = torch.randint(0, vocab, (1, max(2, seq // 2)), generator=g)
    return LoadedModel(model.eval(), args, kwargs, f"checkpoint {path} ({cls.__name__})")
