"""The op the pass emits for one plan group: `torch.ops.fxsoftmax.group` (one result) and `group2` (two).

`group(a, a1=None, ..., spec)` computes one plan group (GroupSpec, as JSON) from its inputs. Here it is
defined for PyTorch (eager and fake tensors); fxsoftmax.lowering teaches iree-turbine to lower it to one
pre-formed `flow.dispatch.region`, which IREE keeps as exactly one dispatch.
"""

from __future__ import annotations

import torch

from .dtypes import torch_dtype
from .group import MAX_INPUTS, GroupSpec, output_shapes, run_group

LIBRARY = torch.library.Library("fxsoftmax", "DEF")
ARGS = ", ".join(["Tensor a"] + [f"Tensor? a{i}" for i in range(1, MAX_INPUTS)])
RESULTS = {"group": "Tensor", "group2": "(Tensor, Tensor)"}


def _inputs(args: tuple) -> list[torch.Tensor]:
    return [t for t in args[:-1] if t is not None]


def _eager(*args):
    out = run_group(GroupSpec.from_json(args[-1]), _inputs(args))
    return out[0] if len(out) == 1 else out


def _fake(*args):
    spec, tensors = GroupSpec.from_json(args[-1]), _inputs(args)
    out = tuple(tensors[0].new_empty(shape, dtype=torch_dtype(spec.output_dtype(name)))
                for name, shape in zip(spec.outputs, output_shapes(spec, tensors)))
    return out[0] if len(out) == 1 else out


for _name, _result in RESULTS.items():
    LIBRARY.define(f"{_name}({ARGS}, str spec) -> {_result}")
    LIBRARY.impl(_name, _eager, "CompositeExplicitAutograd")
    torch.library.register_fake(f"fxsoftmax::{_name}", _fake, lib=LIBRARY)

GROUP_OPS = {1: torch.ops.fxsoftmax.group.default, 2: torch.ops.fxsoftmax.group2.default}
