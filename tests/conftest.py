"""Shared set-up: the tests folder's helpers import as `helpers`; every test starts from a fresh dynamo."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """torch.compile state from another test (compiled graphs, dynamic-shape decisions) never leaks in."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()

