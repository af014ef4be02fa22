"""Shared set-up: the tests folder's helpers import as `helpers`; every test starts from a fresh dynamo."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """torch.compile state from another test (compiled graphs, dynamic-shape decisions) never leaks in."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


_OWN_COMPILE_CACHE: list[str] = []


def pytest_configure(config):
    """Compiles shared by this run's processes (xdist workers inherit the folder, as do the command lines
    tests start): many tests compile the same module (a model under a preset, a plan with nothing to rewrite)."""
    if "FXSOFTMAX_COMPILE_CACHE_DIR" not in os.environ:
        _OWN_COMPILE_CACHE.append(tempfile.mkdtemp(prefix="fxsoftmax-compiles-"))
        os.environ["FXSOFTMAX_COMPILE_CACHE_DIR"] = _OWN_COMPILE_CACHE[0]


def pytest_unconfigure(config):
    for folder in _OWN_COMPILE_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
