"""Softmax's four steps, once: what each reads and writes, how a plan writes them, and exps per element.

Steps along the softmax dim: 1 `m = max(x)`, 2 `z = exp(x - m)`, 3 `l = sum(z)`, 4 `y = z / l`. A plan
group lists its steps as tokens: "1".."4", a recomputed step marked "2'", and "13" for steps 1 and 3
computed together in one online pass over x (running max, rescaled running sum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

RECOMPUTED = "'"
ONLINE = "13"


@dataclass(frozen=True)
class Step:
    key: str  # "1".."4", or ONLINE
    name: str
    reads: tuple[str, ...]  # values: "x" (the input), "m", "z", "l"
    writes: tuple[str, ...]  # among "m", "z", "l", "y"


STEPS: dict[str, Step] = {
    "1": Step("1", "max", ("x",), ("m",)),
    "2": Step("2", "exp", ("x", "m"), ("z",)),
    "3": Step("3", "sum", ("z",), ("l",)),
    "4": Step("4", "scale", ("z", "l"), ("y",)),
    ONLINE: Step(ONLINE, "online max+sum", ("x",), ("m", "l")),
}
FULL_SIZE = frozenset({"x", "z", "y"})  # values the size of x; m and l are reduced along the softmax dim
NUMBER = {"m": 1, "z": 2, "l": 3, "y": 4}  # the step that makes each value
FUSED_EXPS = 2  # IREE's own softmax recomputes exp


def key(token: str) -> str:
    """The step a token computes, recomputation mark dropped."""
    return token.rstrip(RECOMPUTED)


def is_recomputed(token: str) -> bool:
    return token.endswith(RECOMPUTED)


def reads(token: str) -> tuple[str, ...]:
    return STEPS[key(token)].reads


def writes(token: str) -> tuple[str, ...]:
    return STEPS[key(token)].writes


def numbers(token: str) -> tuple[int, ...]:
    """The step numbers a token covers ("13" covers 1 and 3)."""
    return tuple(NUMBER[v] for v in writes(token))


def outside_reads(tokens: Iterable[str]) -> set[str]:
    """Values a group reads from outside itself."""
    made: set[str] = set()
    needed: set[str] = set()
    for t in tokens:
        needed |= set(reads(t)) - made
        made |= set(writes(t))
    return needed


def group_exps(keys: Iterable[str]) -> int:
    """Exps per element in one dispatch holding steps `keys`: one where it makes z, two in an online
    max+sum pass (the rescale and the new term; read back from IREE as steps 1 and 3 without 2)."""
    keys = set(keys)
    if "2" in keys:
        return 1
    return 2 if ONLINE in keys or {"1", "3"} <= keys else 0


def exps_per_element(groups: Iterable[Iterable[str]]) -> int:
    return sum(group_exps(key(t) for t in g) for g in groups)
