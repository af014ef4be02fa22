"""The step tag: how every op the pass emits names its softmax site, plan group and step.

iree-turbine turns it into an MLIR location and IREE keeps locations through dispatch formation, which
is how the report finds each step in IREE's own output.
"""

from __future__ import annotations

import re

PREFIX = "fxsoftmax:"
# step: digits with ' for a recomputed step ("2'"), "13" for the online pass, or "fused"
PATTERN = re.compile(r"fxsoftmax:([^:\"]+):g(\d+):s([0-9']+|fused)")


def step_tag(site: str, group: int, step: str) -> str:
    return f"{PREFIX}{site}:g{group}:s{step}"
