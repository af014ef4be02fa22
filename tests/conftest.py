"""Shared set-up: the tests folder's helpers import as `helpers`; every test starts from a fresh dynamo;
the session's processes (xdist workers, the CLI's subprocesses) share one folder of compiles."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

from fxsoftmax.backends.compiler import DISK_CACHE_ENV


def pytest_addoption(parser):
    parser.addoption("--every-preset", action="store_true", help="Hugging Face model tests: every preset in every test")


def pytest_configure(config):
    """Identical compiles (the same MLIR and flags from different tests) run iree-compile once per session.
    Set before xdist starts its workers, which inherit it; removed when the session ends."""
    if DISK_CACHE_ENV not in os.environ and not hasattr(config, "workerinput"):
        os.environ[DISK_CACHE_ENV] = config._fxsoftmax_compiles = tempfile.mkdtemp(prefix="fxsoftmax-test-compiles-")


def pytest_unconfigure(config):
    folder = getattr(config, "_fxsoftmax_compiles", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        del os.environ[DISK_CACHE_ENV]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """torch.compile state from another test (compiled graphs, dynamic-shape decisions) never leaks in."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
