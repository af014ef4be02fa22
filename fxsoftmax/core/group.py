"""One plan group: what it reads, which steps it computes, what it writes; and its PyTorch meaning.

A group is emitted as one op (`torch.ops.fxsoftmax.group`, fxsoftmax.core.op), lowered to one pre-formed
IREE dispatch region (fxsoftmax.lowering), so the group is exactly one dispatch without any module-wide flag.

Inputs are named: "x" (the softmax input), "p0".. (leaves of elementwise producers of x pulled into
the first group, combined by `chain`), and "m", "z", "l" (results of earlier groups; m and l keep the
softmax dim with size 1). `l` leaves its group already clamped (safe softmax) and inverted when
`reciprocal`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence, Union

import torch

from . import steps
from .dtypes import torch_dtype

# A producer instruction: (op, result dtype, operands...). An operand is an input name ("p0"), an
# earlier instruction's result ("t2") or a float constant.
Operand = Union[str, float]
Instr = tuple  # (op: str, dtype: str, *operands: Operand)
CHAIN_OPS = {"add": 2, "sub": 2, "mul": 2, "div": 2, "neg": 1, "tanh": 1, "where": 3, "convert": 1}
MAX_INPUTS = 6  # the op's fixed arity (iree-turbine 3.9 cannot lower tensor-list arguments)


@dataclass(frozen=True)
class GroupSpec:
    site: str
    group: int  # 1-based
    steps: tuple[str, ...]  # step tokens (fxsoftmax.core.steps): "1", "2'", "13", ...
    dim: int  # non-negative
    shape: tuple[int, ...]  # the softmax input's sizes, -1 where dynamic
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]  # among "m", "z", "l", "y"
    x_dtype: str  # x as it arrives (the chain's result)
    in_dtype: str  # what softmax sees (dtype= casts x to it)
    compute_dtype: str
    out_dtype: str
    safe: bool = False  # fully masked rows give 0 (aten._safe_softmax)
    reciprocal: bool = False  # l crosses to step 4 as 1/l and step 4 multiplies
    chain: tuple[Instr, ...] = ()
    kernel: str = ""  # "inplace": lowered to fxsoftmax's hand-written executable (fxsoftmax.lowering.inplace)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GroupSpec":
        d = json.loads(text)
        d["chain"] = tuple(tuple(i) for i in d["chain"])
        return cls(**{k: tuple(v) if isinstance(v, list) and k != "chain" else v for k, v in d.items()})

    @property
    def rank(self) -> int:
        return len(self.shape)

    def reads_x(self) -> bool:
        return any("x" in steps.reads(t) for t in self.steps)

    def output_keeps_full_size(self, name: str) -> bool:
        return name in steps.FULL_SIZE

    def output_dtype(self, name: str) -> str:
        return self.out_dtype if name == "y" else self.compute_dtype


def run_chain(chain: Sequence[Instr], env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate producer instructions in PyTorch; the last one's result is x."""
    temps: list[torch.Tensor] = []

    def value(o: Operand, dtype: torch.dtype):
        if isinstance(o, str):
            t = env[o] if o[0] == "p" else temps[int(o[1:])]
            return t if t.dtype == torch.bool else t.to(dtype)
        return o

    for op, dtype_text, *operands in chain:
        dtype = torch_dtype(dtype_text)
        a = [value(o, dtype) for o in operands]
        if op == "where":
            cond = a[0] if isinstance(a[0], torch.Tensor) else torch.tensor(bool(a[0]))
            b, c = (torch.as_tensor(v, dtype=dtype) for v in a[1:])
            out = torch.where(cond, b, c)
        elif op == "convert":
            out = torch.as_tensor(a[0]).to(dtype)
        elif op == "neg":
            out = -a[0]
        elif op == "tanh":
            out = torch.tanh(a[0])
        else:
            out = getattr(torch, op)(*(torch.as_tensor(v, dtype=dtype) for v in a))
        temps.append(out.to(dtype))
    return temps[-1]


def run_group(spec: GroupSpec, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The group's results in PyTorch (the op's eager implementation)."""
    if any(t.numel() == 0 for t in tensors):  # nothing to reduce over (PyTorch's softmax is empty too)
        return tuple(torch.zeros(s, dtype=torch_dtype(spec.output_dtype(o))) for o, s in zip(spec.outputs, output_shapes(spec, tensors)))
    env = dict(zip(spec.inputs, tensors))
    cdt, dim = torch_dtype(spec.compute_dtype), spec.dim
    if spec.reads_x():
        x = env["x"] if "x" in env else run_chain(spec.chain, env)
        xc = x.to(torch_dtype(spec.in_dtype)).to(cdt)
        lowest = torch.finfo(cdt).min

    def finish_sum(l: torch.Tensor) -> torch.Tensor:
        if spec.safe:
            l = l.clamp(min=torch.finfo(cdt).tiny)
        return l.reciprocal() if spec.reciprocal else l

    for step in map(steps.key, spec.steps):
        if step == steps.ONLINE:
            env["m"] = xc.amax(dim, keepdim=True).clamp(min=lowest)
            env["l"] = finish_sum(torch.exp(xc - env["m"]).sum(dim, keepdim=True))
        elif step == "1":
            m = xc.amax(dim, keepdim=True)
            env["m"] = m.clamp(min=lowest) if spec.safe else m
        elif step == "2":
            env["z"] = torch.exp(xc - env["m"])
        elif step == "3":
            env["l"] = finish_sum(env["z"].sum(dim, keepdim=True))
        else:
            y = env["z"] * env["l"] if spec.reciprocal else env["z"] / env["l"]
            env["y"] = y.to(torch_dtype(spec.out_dtype))
    return tuple(env[o] for o in spec.outputs)


def output_shapes(spec: GroupSpec, tensors: Sequence[torch.Tensor]) -> list[list]:
    """Each output's sizes (symbolic where the inputs' are), taken from the inputs."""
    full: list = []
    for i in range(spec.rank):
        sizes = [
            t.shape[i - (spec.rank - t.dim())]
            for name, t in zip(spec.inputs, tensors)
            if i - (spec.rank - t.dim()) >= 0 and not (name in ("m", "l") and i == spec.dim)
        ]
        symbolic = [s for s in sizes if not isinstance(s, int)]
        full.append(spec.shape[i] if spec.shape[i] >= 0 else symbolic[0] if symbolic else max(sizes))
    reduced = [1 if i == spec.dim else s for i, s in enumerate(full)]
    return [full if spec.output_keeps_full_size(o) else reduced for o in spec.outputs]
