"""The models fxsoftmax is tried on, built from configs with random weights (nothing is downloaded): Hugging
Face families at tiny size (the zoo's), the built-in models the CLI and the benchmark name (tiny ones from
the same families, and two at real width), and the sources the CLI loads a model from."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..core.dtypes import BY_NAME as DTYPES
from ..core.dtypes import dtype

TEXT = dict(vocab_size=256, max_position_embeddings=64)
SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
DECODER = dict(**SMALL, **TEXT, num_key_value_heads=1, use_cache=False)
ENC_DEC = ("encoder_layers", "decoder_layers")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # decoder, moe, encoder, encoder-decoder, vision, audio (waveform), speech (log-mel)
    model_class: str
    config: dict  # a tiny config: one layer, hidden 32
    softmaxes: int  # softmax sites per layer with eager attention (attention layers, plus MoE routers)
    output: str = "last_hidden_state"
    layer_keys: tuple[str, ...] = ("num_hidden_layers",)  # config keys holding the layer count


FAMILIES = [
    Family("llama", "decoder", "LlamaForCausalLM", DECODER, 1, "logits"),
    Family("mistral", "decoder", "MistralForCausalLM", DECODER, 1, "logits"),
    Family("qwen2", "decoder", "Qwen2ForCausalLM", DECODER, 1, "logits"),
    Family("qwen3", "decoder", "Qwen3ForCausalLM", dict(DECODER, head_dim=16), 1, "logits"),
    Family("phi3", "decoder", "Phi3ForCausalLM", dict(DECODER, pad_token_id=0), 1, "logits"),
    Family("gemma2", "decoder", "Gemma2ForCausalLM", dict(DECODER, head_dim=16), 1, "logits"),
    Family("falcon", "decoder", "FalconForCausalLM", dict(SMALL, **TEXT, use_cache=False), 1, "logits"),
    Family("gpt-neox", "decoder", "GPTNeoXForCausalLM", dict(SMALL, **TEXT, use_cache=False), 1, "logits"),
    Family("opt", "decoder", "OPTForCausalLM", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64,
                                                    word_embed_proj_dim=32, use_cache=False, **TEXT), 1, "logits"),
    Family("bloom", "decoder", "BloomForCausalLM", dict(hidden_size=32, n_layer=1, n_head=2, vocab_size=256, use_cache=False), 1, "logits",
           ("n_layer",)),
    Family("stablelm", "decoder", "StableLmForCausalLM", DECODER, 1, "logits"),
    Family("olmo", "decoder", "OlmoForCausalLM", DECODER, 1, "logits"),
    Family("gpt2", "decoder", "GPT2LMHeadModel", dict(n_embd=32, n_layer=1, n_head=2, vocab_size=256, n_positions=64,
                                                      use_cache=False, bos_token_id=0, eos_token_id=0), 1, "logits", ("n_layer",)),
    Family("mixtral", "moe", "MixtralForCausalLM", dict(DECODER, num_local_experts=4, num_experts_per_tok=2), 2, "logits"),
    Family("qwen2-moe", "moe", "Qwen2MoeForCausalLM", dict(DECODER, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                                          shared_expert_intermediate_size=32), 2, "logits"),
    Family("qwen3-moe", "moe", "Qwen3MoeForCausalLM", dict(DECODER, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                                          moe_intermediate_size=32, norm_topk_prob=True), 2, "logits"),
    # attention with learned sinks, sliding window, router softmax over the top-k logits
    Family("gpt-oss", "moe", "GptOssForCausalLM", dict(DECODER, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                                                      sliding_window=4, layer_types=["sliding_attention"]), 2, "logits"),
    # multi-head latent attention (q/k heads 16 wide, v heads 8), sigmoid router over groups: topk(sorted=False)
    Family("deepseek-v3", "moe", "DeepseekV3ForCausalLM", dict(DECODER, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                                                              qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=8,
                                                              num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=32,
                                                              first_k_dense_replace=0, num_key_value_heads=2), 1, "logits"),
    Family("bert", "encoder", "BertModel", dict(SMALL, **TEXT), 1),
    Family("albert", "encoder", "AlbertModel", dict(SMALL, embedding_size=16, **TEXT), 1),
    Family("electra", "encoder", "ElectraModel", dict(SMALL, embedding_size=16, **TEXT), 1),
    Family("roberta", "encoder", "RobertaModel", dict(SMALL, vocab_size=256, max_position_embeddings=80, pad_token_id=1), 1),
    Family("xlm-roberta", "encoder", "XLMRobertaModel", dict(SMALL, vocab_size=256, max_position_embeddings=80, pad_token_id=1), 1),
    Family("distilbert", "encoder", "DistilBertModel", dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64, **TEXT), 1,
           layer_keys=("n_layers",)),
    Family("bart", "encoder-decoder", "BartModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                        use_cache=False, **TEXT), 3, layer_keys=ENC_DEC),
    Family("marian", "encoder-decoder", "MarianModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                            use_cache=False, pad_token_id=0, decoder_start_token_id=0, **TEXT), 3,
           layer_keys=ENC_DEC),
    Family("pegasus", "encoder-decoder", "PegasusModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                              use_cache=False, **TEXT), 3, layer_keys=ENC_DEC),
    # relative position bias added to unscaled scores
    Family("t5", "encoder-decoder", "T5Model", dict(d_model=32, d_kv=16, d_ff=64, num_heads=2, relative_attention_num_buckets=8,
                                                    decoder_start_token_id=0, use_cache=False, vocab_size=256), 3,
           layer_keys=("num_layers", "num_decoder_layers")),
    # log-mel input through convolutions, encoder-decoder with cross-attention
    Family("whisper", "speech", "WhisperModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                                                     max_source_positions=20, max_target_positions=64, vocab_size=256, pad_token_id=0,
                                                     bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, use_cache=False), 3,
           layer_keys=ENC_DEC),
    Family("vit", "vision", "ViTModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("deit", "vision", "DeiTModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("dinov2", "vision", "Dinov2Model", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("clip-vision", "vision", "CLIPVisionModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("siglip-vision", "vision", "SiglipVisionModel", dict(SMALL, image_size=32, patch_size=8), 2),
    Family("wav2vec2", "audio", "Wav2Vec2Model", dict(SMALL, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2), 1),
    Family("hubert", "audio", "HubertModel", dict(SMALL, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2), 1),
    # attention in windows of 4x4 patches with a relative position bias, then in shifted windows with a mask
    Family("swin", "vision", "SwinModel", dict(image_size=32, patch_size=4, embed_dim=16, depths=[2], num_heads=[2], window_size=4), 2,
           layer_keys=()),
]
BY_NAME = {f.name: f for f in FAMILIES}
ATTENTION = ("eager", "sdpa", "default")  # Hugging Face's attn_implementation; "default": transformers' choice
EXPERTS = ("batched_mm", "default")  # MoE experts implementation; "default": transformers' (grouped_mm)
NOT_TEXT = ("vision", "audio", "speech")  # kinds called without input ids or a padding mask


@dataclass
class BuiltModel:
    """A model, example inputs, how many softmax sites it has with eager attention, and its main output."""

    name: str
    model: torch.nn.Module
    args: tuple
    kwargs: dict
    softmaxes: int
    output_name: str

    def output(self, out: Any) -> torch.Tensor:
        return getattr(out, self.output_name)


def family_model(name: str, attn: str = "eager", *, mask: bool = False, seq: int = 8, layers: int = 1,
                 dtype: torch.dtype = torch.float32, experts: str = "batched_mm", seed: int = 0) -> BuiltModel:
    """A family's tiny model and inputs: input ids alone, or with a padding mask (`mask`)."""
    import transformers as tf

    if name not in BY_NAME:
        raise ValueError(f"unknown zoo family {name!r}; accepted: {', '.join(BY_NAME)}")
    if attn not in ATTENTION or experts not in EXPERTS:
        raise ValueError(f"attn must be one of {ATTENTION} and experts one of {EXPERTS}, got {attn!r}, {experts!r}")
    fam = BY_NAME[name]
    cls = getattr(tf, fam.model_class)
    torch.manual_seed(seed)
    config = dict(fam.config, **{k: layers for k in fam.layer_keys})
    cfg = cls.config_class(**config, **({} if attn == "default" else {"attn_implementation": attn}))
    if fam.kind == "moe" and experts != "default":
        cfg._experts_implementation = experts  # transformers' gather + bmm: no custom op, no data-dependent loop
    model = cls(cfg).eval().to(dtype)
    g = torch.Generator().manual_seed(seed)
    kwargs: dict = {}
    if fam.kind == "vision":
        args: tuple = (torch.randn(1, 3, 32, 32, generator=g).to(dtype),)
    elif fam.kind == "audio":
        args = (torch.randn(1, 800, generator=g).to(dtype),)
    elif fam.kind == "speech":  # log-mel features, as many frames as the encoder takes
        args = (torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g).to(dtype),)
        kwargs["decoder_input_ids"] = torch.randint(3, 250, (1, max(2, seq // 2)), generator=g)
    else:
        args = (torch.randint(3, 250, (1, seq), generator=g),)
        if fam.kind == "encoder-decoder":
            kwargs["decoder_input_ids"] = torch.randint(3, 250, (1, max(2, seq // 2)), generator=g)
    if mask and fam.kind not in NOT_TEXT:  # wav2vec2-style models are called without one
        m = torch.ones(args[0].shape[:2], dtype=torch.int64)
        m[0, -max(1, m.shape[1] // 4):] = 0  # a padded tail: the attention mask matters
        kwargs["attention_mask"] = m
    return BuiltModel(name, model, args, kwargs, fam.softmaxes * layers, fam.output)


# name: (family, layers, description); tiny ones are called with a padding mask where they take one
BUILTIN_TINY = {
    "bert-tiny": ("bert", 2, "BERT encoder, 2 layers, hidden 32"),
    "distilbert-tiny": ("distilbert", 2, "DistilBERT encoder, 2 layers, hidden 32"),
    "gpt2-tiny": ("gpt2", 2, "GPT-2 LM head, 2 layers, hidden 32 (causal mask)"),
    "llama-tiny": ("llama", 2, "LLaMA causal LM, 2 layers, hidden 32, grouped-query attention"),
    "vit-tiny": ("vit", 2, "ViT encoder on 32x32 images, patch 8, 2 layers"),
    "bart-tiny": ("bart", 2, "BART encoder-decoder, 2+2 layers (6 attention softmaxes)"),
}
BUILTIN_MODELS = {
    **{name: text for name, (_, _, text) in BUILTIN_TINY.items()},
    "bert-base": "BERT-base encoder at real size: 12 layers (or --layers), hidden 768, 12 heads (110M parameters at 12 layers)",
    "llama-2048": "LLaMA decoder at TinyLlama width: hidden 2048, 32 heads, 4 KV heads, 2 layers (or --layers), called with input ids alone",
}
TINY_MODELS = tuple(BUILTIN_TINY)


def builtin_model(name: str, attn: str = "eager", seq: int = 8, seed: int = 0, layers: int | None = None) -> BuiltModel:
    """A built-in model; `attn` is Hugging Face's attn_implementation ("eager", "sdpa" or "default")."""
    if name in BUILTIN_TINY:
        family, default_layers, _ = BUILTIN_TINY[name]
        built = family_model(family, attn, mask=True, seq=seq, layers=layers or default_layers, seed=seed)
        built.name = name
        return built
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; accepted: {', '.join(BUILTIN_MODELS)}")
    return _real_size(name, attn, seq, seed, layers)


def _real_size(name: str, attn: str, seq: int, seed: int, layers: int | None) -> BuiltModel:
    import transformers as tf

    if attn not in ATTENTION:
        raise ValueError(f"unknown attn_implementation {attn!r}; accepted: {', '.join(ATTENTION)}")
    torch.manual_seed(seed)
    impl = {} if attn == "default" else {"attn_implementation": attn}
    if name == "bert-base":
        # BERT-base: hidden 768, 12 heads; positions beyond its 512 get embeddings of their own
        cfg = tf.BertConfig(num_hidden_layers=layers or 12, max_position_embeddings=max(512, seq), **impl)
        ids = torch.randint(3, cfg.vocab_size, (1, seq))
        mask = torch.ones(1, seq, dtype=torch.int64)
        mask[0, -max(1, seq // 4):] = 0
        return BuiltModel(name, tf.BertModel(cfg).eval(), (ids,), {"attention_mask": mask}, cfg.num_hidden_layers, "last_hidden_state")
    cfg = tf.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers or 2, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096, use_cache=False, **impl)
    ids = torch.randint(3, cfg.vocab_size, (1, seq))
    return BuiltModel(name, tf.LlamaForCausalLM(cfg).eval(), (ids,), {}, cfg.num_hidden_layers, "logits")


# --- model sources for the command line: a built-in name, a local checkpoint folder, or module:callable ---


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
        try:
            kind = dtype(parts[1]).torch
        except ValueError:
            raise ValueError(f"input spec {text!r}: unknown dtype {parts[1]!r}; accepted: {', '.join(DTYPES)}") from None
        low, high = 0, 64
        if len(parts) == 3:
            try:
                low, high = (int(v) for v in parts[2].split("-"))
            except ValueError:
                raise ValueError(f"input spec {text!r}: range {parts[2]!r} is not LOW-HIGH; accepted: {accepted}") from None
        return cls(shape, kind, low, high)

    def __str__(self) -> str:
        name = dtype(self.dtype).name
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
    source: str, inputs: Sequence[InputSpec] = (), *, attn: str = "sdpa", seq: int = 16, seed: int = 0, layers: int | None = None
) -> LoadedModel:
    """A model and example inputs from a built-in name, a local Hugging Face checkpoint folder (nothing is
    downloaded), or 'module:callable' returning an nn.Module (then `inputs` gives its positional inputs).
    The same source, seed and specs give the same weights and inputs again."""
    if source in BUILTIN_MODELS:
        if inputs:
            raise ValueError(f"built-in model {source!r} makes its own inputs; --input is for module:callable models")
        built = builtin_model(source, attn, seq=seq, seed=seed, layers=layers)
        return LoadedModel(built.model, built.args, built.kwargs, f"built-in {source}: {BUILTIN_MODELS[source]}")
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
