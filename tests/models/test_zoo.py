"""The model zoo in CI: every family under one preset, through export (input ids alone and with a padding
mask) and torch.compile; every preset on a few families is tests/models/test_hf_models.py. The full table is
`fxsoftmax zoo` (docs/zoo.md, tables in docs/results/zoo)."""

from __future__ import annotations

import pytest
import torch

from fxsoftmax.tools.models import BY_NAME, NOT_TEXT, family_model
from fxsoftmax.tools.zoo import check_family

pytestmark = pytest.mark.slow
TEXT = [n for n, f in BY_NAME.items() if f.kind not in NOT_TEXT]


IREE_FAMILIES = ("llama", "qwen2-moe", "bert", "vit")  # also run on the second IREE (make test-iree)


def _matches_eager_with_a_site_per_softmax(row: dict) -> None:
    assert "err" in row, row.get("trace", row["error"])  # it ran
    assert row["err"] <= 1e-4, row
    assert row["sites"] == BY_NAME[row["family"]].softmaxes, row


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.iree) if n in IREE_FAMILIES else n for n in BY_NAME])
def test_every_family_exports_and_matches_eager(name):
    _matches_eager_with_a_site_per_softmax(check_family(name, "export", "split"))


@pytest.mark.parametrize("name", TEXT)
def test_text_families_with_a_padding_mask(name):
    _matches_eager_with_a_site_per_softmax(check_family(name, "export", "split-sum", mask=True))


@pytest.mark.parametrize("name", ["llama", "mixtral", "bert", "bart", "vit", "wav2vec2"])
def test_torch_compile_path(name):
    _matches_eager_with_a_site_per_softmax(check_family(name, "torch.compile", "remat"))


# As transformers builds them by default: SDPA attention (decomposed on CPU), `grouped_mm` MoE experts
# (aten.histc and the grouped matmul rewritten), group-limited routing (topk(sorted=False), a scatter)
@pytest.mark.parametrize("path", ["export", "torch.compile"])
@pytest.mark.parametrize("name", ["mixtral", "qwen2-moe", "deepseek-v3", "gpt-oss", "whisper"])
def test_default_configs(name, path):
    _matches_eager_with_a_site_per_softmax(check_family(name, path, "auto", "default"))


def test_moe_router_softmax_is_a_site():
    row = check_family("qwen2-moe", "export", "per-step")
    _matches_eager_with_a_site_per_softmax(row)
    assert row["sites"] == 2  # attention + router


def test_cli_zoo_writes_the_table(tmp_path):
    from fxsoftmax.cli import main

    assert main(["zoo", "--family", "bert", "--family", "vit", "--policy", "split", "--path", "export", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "zoo.md").read_text()
    assert "| bert | encoder | ids + padding mask | export | eager | ok |" in table and "3 of 3 cells ok." in table


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown zoo family 'gpt5'; accepted: llama"):
        family_model("gpt5")


# Deployed weights: the whole model in bf16 or f16 (softmax computed in f32 inside each group). Stated
# tolerances on logits of magnitude < 1: 2^-7 for bf16, 2^-9 for f16 (measured 1.95e-3 and 9.8e-4).
LOW_PRECISION_ATOL = {torch.bfloat16: 2**-7, torch.float16: 2**-9}


@pytest.mark.parametrize("policy", ["split", "inplace"])
@pytest.mark.parametrize("dtype", list(LOW_PRECISION_ATOL), ids=str)
@pytest.mark.parametrize("name", ["llama", "qwen2", "mistral"])
def test_decoders_with_low_precision_weights(name, dtype, policy):
    import fxsoftmax

    zm = family_model(name, dtype=dtype, mask=True)
    with torch.no_grad():
        want = zm.output(zm.model(*zm.args, **zm.kwargs))
    art = fxsoftmax.export(zm.model, zm.args, zm.kwargs, policy=policy)
    got = zm.output(art(*zm.args, **zm.kwargs))
    assert got.dtype == dtype and want.abs().max().item() < 1
    assert (got.float() - want.float()).abs().max().item() <= LOW_PRECISION_ATOL[dtype]
    assert [(s.status, s.plan) for s in art.sites] == [("rewritten", policy)]
