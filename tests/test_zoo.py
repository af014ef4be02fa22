"""The model zoo in CI: every family under one preset, through export (input ids alone and with a padding
mask) and torch.compile; every preset on a few families is tests/test_hf_models.py. The full table is
`fxsoftmax zoo` (docs/zoo.md)."""

from __future__ import annotations

import pytest
import torch

from fxsoftmax.zoo import BY_NAME, check_family, zoo_model

pytestmark = pytest.mark.slow
TEXT = [n for n, f in BY_NAME.items() if f.kind not in ("vision", "audio")]


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_family_exports_and_matches_eager(name):
    row = check_family(name, "export", "split")
    assert row["ok"], row.get("trace", row["error"])


@pytest.mark.parametrize("name", TEXT)
def test_text_families_with_a_padding_mask(name):
    row = check_family(name, "export", "split-sum", mask=True)
    assert row["ok"], row.get("trace", row["error"])


@pytest.mark.parametrize("name", ["llama", "mixtral", "bert", "bart", "vit", "wav2vec2"])
def test_torch_compile_path(name):
    row = check_family(name, "torch.compile", "remat")
    assert row["ok"], row.get("trace", row["error"])


def test_moe_router_softmax_is_a_site():
    row = check_family("qwen2-moe", "export", "per-step")
    assert row["ok"] and row["sites"] == 2  # attention + router


def test_cli_zoo_writes_the_table(tmp_path):
    from fxsoftmax.cli import main

    assert main(["zoo", "--family", "bert", "--family", "vit", "--policy", "split", "--path", "export", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "zoo.md").read_text()
    assert "| bert | encoder | ids + padding mask | export | eager | ok |" in table and "3 of 3 cells ok." in table


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown zoo family 'gpt5'; accepted: llama"):
        zoo_model("gpt5")
