"""The model zoo: Hugging Face families from tiny configs (random weights, nothing downloaded), called the
way users call them, and a sweep writing the table family x path x preset."""

from __future__ import annotations

import copy
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

TEXT = dict(vocab_size=256, max_position_embeddings=64)
SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
DECODER = dict(**SMALL, **TEXT, num_key_value_heads=1, use_cache=False)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # decoder, moe, encoder, encoder-decoder, vision, audio
    model_class: str
    config: dict
    softmaxes: int  # softmax sites with eager attention (attention layers, plus MoE routers)
    output: str = "last_hidden_state"


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
    Family("bloom", "decoder", "BloomForCausalLM", dict(hidden_size=32, n_layer=1, n_head=2, vocab_size=256, use_cache=False), 1, "logits"),
    Family("stablelm", "decoder", "StableLmForCausalLM", DECODER, 1, "logits"),
    Family("olmo", "decoder", "OlmoForCausalLM", DECODER, 1, "logits"),
    Family("gpt2", "decoder", "GPT2LMHeadModel", dict(n_embd=32, n_layer=1, n_head=2, vocab_size=256, n_positions=64,
                                                      use_cache=False), 1, "logits"),
    Family("mixtral", "moe", "MixtralForCausalLM", dict(DECODER, num_local_experts=4, num_experts_per_tok=2), 2, "logits"),
    Family("qwen2-moe", "moe", "Qwen2MoeForCausalLM", dict(DECODER, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                                          shared_expert_intermediate_size=32), 2, "logits"),
    Family("bert", "encoder", "BertModel", dict(SMALL, **TEXT), 1),
    Family("albert", "encoder", "AlbertModel", dict(SMALL, embedding_size=16, **TEXT), 1),
    Family("electra", "encoder", "ElectraModel", dict(SMALL, embedding_size=16, **TEXT), 1),
    Family("roberta", "encoder", "RobertaModel", dict(SMALL, vocab_size=256, max_position_embeddings=80, pad_token_id=1), 1),
    Family("xlm-roberta", "encoder", "XLMRobertaModel", dict(SMALL, vocab_size=256, max_position_embeddings=80, pad_token_id=1), 1),
    Family("distilbert", "encoder", "DistilBertModel", dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64, **TEXT), 1),
    Family("bart", "encoder-decoder", "BartModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                        use_cache=False, **TEXT), 3),
    Family("marian", "encoder-decoder", "MarianModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                            use_cache=False, pad_token_id=0, decoder_start_token_id=0, **TEXT), 3),
    Family("pegasus", "encoder-decoder", "PegasusModel", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                              use_cache=False, **TEXT), 3),
    Family("vit", "vision", "ViTModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("deit", "vision", "DeiTModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("dinov2", "vision", "Dinov2Model", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("clip-vision", "vision", "CLIPVisionModel", dict(SMALL, image_size=32, patch_size=8), 1),
    Family("siglip-vision", "vision", "SiglipVisionModel", dict(SMALL, image_size=32, patch_size=8), 2),
    Family("wav2vec2", "audio", "Wav2Vec2Model", dict(SMALL, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2), 1),
    Family("hubert", "audio", "HubertModel", dict(SMALL, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2), 1),
]
BY_NAME = {f.name: f for f in FAMILIES}


@dataclass
class ZooModel:
    family: Family
    model: torch.nn.Module
    args: tuple
    kwargs: dict

    def output(self, out: Any) -> torch.Tensor:
        return getattr(out, self.family.output)


def zoo_model(name: str, attn: str = "eager", *, mask: bool = False, seq: int = 8, dtype: torch.dtype = torch.float32) -> ZooModel:
    """A family's tiny model and inputs: input ids alone, or with a padding mask (`mask`)."""
    import transformers as tf

    if name not in BY_NAME:
        raise ValueError(f"unknown zoo family {name!r}; accepted: {', '.join(BY_NAME)}")
    fam = BY_NAME[name]
    cls = getattr(tf, fam.model_class)
    torch.manual_seed(0)
    cfg = cls.config_class(**fam.config, attn_implementation=attn)
    if fam.kind == "moe":
        cfg._experts_implementation = "batched_mm"  # transformers' gather + bmm: no custom op, no data-dependent loop
    model = cls(cfg).eval().to(dtype)
    g = torch.Generator().manual_seed(0)
    kwargs: dict = {}
    if fam.kind == "vision":
        args = (torch.randn(1, 3, 32, 32, generator=g).to(dtype),)
    elif fam.kind == "audio":
        args = (torch.randn(1, 800, generator=g).to(dtype),)
    else:
        args = (torch.randint(3, 250, (1, seq), generator=g),)
        if fam.kind == "encoder-decoder":
            kwargs["decoder_input_ids"] = torch.randint(3, 250, (1, max(2, seq // 2)), generator=g)
    if mask and fam.kind not in ("vision", "audio"):  # wav2vec2-style models are called without one
        m = torch.ones(args[0].shape[:2], dtype=torch.int64)
        m[0, -max(1, m.shape[1] // 4):] = 0
        kwargs["attention_mask"] = m
    return ZooModel(fam, model, args, kwargs)


PATHS = ("export", "torch.compile", "decode")
DECODE_CACHE = 16  # static KV cache length of the decode path
DECODE_STEPS = 4  # cache positions the decode path runs


def decode_step(zm: ZooModel, max_cache_len: int = DECODE_CACHE) -> torch.nn.Module:
    """transformers' exportable static-cache decode step (the ExecuTorch path): one token and its cache
    position in, logits out, the KV cache held in buffers the step updates."""
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    model = copy.deepcopy(zm.model)
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.generation_config.cache_implementation = "static"
    return TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=max_cache_len)


def _decode(zm: ZooModel, policy: str) -> tuple[float, list]:
    """Export the decode step, run it on IREE for DECODE_STEPS positions beside eager; the largest
    difference in logits, and the sites."""
    import fxsoftmax

    steps = [{"input_ids": torch.tensor([[t]]), "cache_position": torch.tensor([pos])}
             for pos, t in enumerate(zm.args[0][0, :DECODE_STEPS].tolist())]
    eager = decode_step(zm)
    try:
        want = [eager(**step) for step in steps]
    except Exception as e:
        raise RuntimeError(f"transformers' static-cache decode step fails in eager: {e}") from e
    art = fxsoftmax.export(decode_step(zm), (), steps[0], policy=policy)
    err = max((art(**step).float() - w.float()).abs().max().item() for step, w in zip(steps, want))
    return err, art.sites


def _export(zm: ZooModel, key: tuple, policy: str, programs: dict):
    """fxsoftmax.export, reusing the torch.export of the same model across policies (`programs`)."""
    from .backends.export import build, compile_program, export_program
    from .backends.targets import Target

    def program(decompose: set):
        k = (*key, frozenset(decompose))
        if k not in programs:
            programs[k] = export_program(zm.model, zm.args, zm.kwargs, None, "keep", decompose)
        return copy.deepcopy(programs[k])

    return build(program, lambda ep: compile_program(ep, policy, None, Target("cpu"), what=zm.family.model_class))


def check_family(name: str, path: str, policy: str, attn: str = "eager", *, mask: bool = False, programs: dict | None = None) -> dict:
    """Run one family through one path under one policy; the row of the zoo table. `programs` caches
    torch.export results across calls (the same seeded model each time)."""
    from . import backend

    fam = BY_NAME[name]
    row = {"family": name, "kind": fam.kind, "path": path, "policy": policy, "attn": attn, "mask": mask}
    t = time.perf_counter()
    try:
        zm = zoo_model(name, attn, mask=mask)
        with torch.no_grad():
            if path == "decode":
                if fam.kind not in ("decoder", "moe"):
                    raise ValueError(f"the decode path is for decoders; {name} is {fam.kind}")
                err, sites = _decode(zm, policy)
            else:
                want = zm.output(zm.model(*zm.args, **zm.kwargs))
                if path == "export":
                    art = _export(zm, (name, attn, mask), policy, {} if programs is None else programs)
                    got, sites = zm.output(art(*zm.args, **zm.kwargs)), art.sites
                else:
                    be = backend(policy=policy)
                    torch._dynamo.reset()
                    got = zm.output(torch.compile(zm.model, backend=be)(*zm.args, **zm.kwargs))
                    sites = [s for g in be.graphs for s in g.sites]
                err = (got.float() - want.float()).abs().max().item()
        status = {"fused": ("fused",), "auto": ("fused", "rewritten")}.get(policy, ("rewritten",))
        row.update(sites=sum(s.status in status for s in sites), err=err)
        row["ok"] = row["err"] <= 1e-4 and (attn != "eager" or row["sites"] == fam.softmaxes)
        row["error"] = "" if row["ok"] else f"sites {row['sites']} (want {fam.softmaxes}), max err {row['err']:.1e}"
    except Exception as e:  # recorded in the table, not the end of the sweep
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        first = next((l for l in lines if "error:" in l), lines[0] if lines else "")
        row.update(ok=False, error=f"{type(e).__name__}: {first}"[:300], trace=traceback.format_exc()[-2000:])
    row["seconds"] = round(time.perf_counter() - t, 1)
    return row


def run_zoo(out: str, policies: tuple[str, ...], paths: tuple[str, ...] = PATHS, attns: tuple[str, ...] = ("eager",),
            families: tuple[str, ...] | None = None, say: Callable[[str], None] = print, filename: str = "zoo.md") -> str:
    """The table family x inputs x path x attention x preset, written to `out`/`filename`; returns it."""
    rows = []
    programs: dict = {}
    for name in families or tuple(BY_NAME):
        text = BY_NAME[name].kind not in ("vision", "audio")
        for mask in (False, True) if text else (False,):
            for path in [p for p in paths if p != "decode" or (BY_NAME[name].kind in ("decoder", "moe") and not mask)]:
                for attn in attns:
                    for policy in policies:
                        row = check_family(name, path, policy, attn, mask=mask, programs=programs)
                        rows.append(row)
                        say(f"{name:14} {'mask' if mask else '    '} {path:13} {attn:5} {policy:9} {'ok' if row['ok'] else 'FAIL ' + row['error']}")
        programs.clear()
    text = _table(rows, policies)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, filename), "w") as f:
        f.write(text)
    return text


def _table(rows: list[dict], policies: tuple[str, ...]) -> str:
    lines = ["# fxsoftmax model zoo", "",
             "Tiny configs (1 layer, hidden 32), random weights; a cell is",
             "`ok` when the softmax sites found equal the model's softmaxes and the output is within 1e-4 of eager.", "",
             "| family | kind | inputs | path | attention | " + " | ".join(policies) + " |",
             "|---|---|---|---|---|" + "---|" * len(policies)]
    cells: dict[tuple, dict] = {}
    for r in rows:
        inputs = "ids + padding mask" if r["mask"] else {"vision": "pixels", "audio": "waveform"}.get(r["kind"], "ids")
        if r["path"] == "decode":
            inputs = f"one id + cache position ({DECODE_STEPS} steps, cache {DECODE_CACHE})"
        cells.setdefault((r["family"], r["kind"], inputs, r["path"], r["attn"]), {})[r["policy"]] = r
    failures = []
    for (fam, kind, inputs, path, attn), by in cells.items():
        lines.append(f"| {fam} | {kind} | {inputs} | {path} | {attn} | " + " | ".join(
            ("ok" if by[p]["ok"] else "FAIL") if p in by else "-" for p in policies) + " |")
        failures += [f"- {fam} / {inputs} / {path} / {attn} / {p}: {r['error']}" for p, r in by.items() if not r["ok"]]
    ok = sum(r["ok"] for r in rows)
    return "\n".join(lines + ["", f"{ok} of {len(rows)} cells ok.", ""] + (["## Failures", ""] + failures + [""] if failures else []))
