"""Plans (how a softmax's four steps are grouped into IREE dispatches), presets, per-site policy maps.

The steps of softmax along a dim: 1 `m = max(x)`, 2 `z = exp(x - m)`, 3 `l = sum(z)`, 4 `y = z / l`.
A plan is an ordered list of groups separated by `|`; each group becomes one dispatch. A step marked
`'` is recomputed inside its group and never stored; an unmarked step is computed once and, if a
later group uses it, stored in global memory between the two dispatches. `(13)` computes steps 1 and 3
together in one pass over x with the online normalizer (running max, rescaled running sum).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from . import steps

IN_OUTPUT = "inplace"  # the preset whose one group is fxsoftmax's hand-written executable (fxsoftmax.lowering.inplace)
PRESETS: dict[str, str] = {
    "fused": "leave softmax to IREE (one dispatch, IREE recomputes exp)",
    "remat": "1|2'3|2'4",
    "split": "12|34",
    "split-sum": "123|4",
    "per-step": "1|2|3|4",
    "online": "(13)|2'4",
    IN_OUTPUT: "one hand-written dispatch keeping exp(x - m) in the output and scaling it there (innermost dim, CPU)",
    "auto": "chosen per site: a cost model on CPU, a rule on GPU (fxsoftmax.auto)",
}
FIXED_PRESETS = tuple(p for p in PRESETS if p != "auto")  # every preset with a fixed plan, IREE's own first
# Plans `auto` may pick on CPU besides `fused` and `inplace` (which join where they apply): each compiles
# under a 4 KiB stack for the largest shapes measured (tests/backends/test_iree_cpu.py).
CPU_CANDIDATES = ("remat", "split", "split-sum", "per-step", "online")
DEFAULT_POLICY = "auto"


def _accepted() -> str:
    presets = ", ".join(f"'{k}'" for k in PRESETS)
    return (
        f"accepted: a preset ({presets}) or a plan string of steps 1-4 in groups separated by "
        "'|', with ' marking a recomputed step, e.g. \"12|34\" or \"1|2'3|2'4\""
    )


@dataclass(frozen=True)
class Plan:
    """An ordered partition of softmax's four steps into dispatch groups (empty for `fused` and `auto`);
    each group is a tuple of step tokens (fxsoftmax.core.steps)."""

    groups: tuple[tuple[str, ...], ...]
    name: str | None = None

    @property
    def is_fused(self) -> bool:
        return not self.groups and self.name == "fused"

    @property
    def is_auto(self) -> bool:
        return not self.groups and self.name == "auto"

    @property
    def text(self) -> str:
        if not self.groups:
            return str(self.name)
        return "|".join("".join(f"({t})" if t == steps.ONLINE else t for t in g) for g in self.groups)

    @property
    def label(self) -> str:
        """Preset name if it has one, else the plan string."""
        return self.name or self.text

    @property
    def in_output(self) -> bool:
        """The `inplace` preset: one hand-written dispatch instead of IREE's codegen of the group."""
        return self.name == IN_OUTPUT

    @property
    def dispatches(self) -> int:
        return len(self.groups) if self.groups else 1

    @property
    def exps_per_element(self) -> int:
        return steps.FUSED_EXPS if self.is_fused else steps.exps_per_element(self.groups)

    def stored(self) -> tuple[int, ...]:
        """Steps whose results cross a dispatch boundary (the output, step 4, aside)."""
        out = set()
        for gi, group in enumerate(self.groups):
            later = set().union(*(steps.outside_reads(g) for g in self.groups[gi + 1:]))
            made = {v for t in group if not steps.is_recomputed(t) for v in steps.writes(t)}
            out |= {steps.NUMBER[v] for v in made & later}
        return tuple(sorted(out))

    def __str__(self) -> str:
        return self.label


IN_OUTPUT_PLAN = "1234"  # what `inplace` computes: every step in one group, exp once, z kept in y
IN_OUTPUT_DTYPES = ("float32", "bfloat16", "float16")
IN_OUTPUT_ACCEPTS = f"a softmax over the innermost dim in {', '.join(IN_OUTPUT_DTYPES[:-1])} or {IN_OUTPUT_DTYPES[-1]}"


def in_output_applies(innermost: bool, dtypes: set[str]) -> bool:
    """Whether `inplace`'s kernel takes a softmax: innermost dim, x, softmax and output dtypes among IN_OUTPUT_DTYPES."""
    return innermost and bool(dtypes) and dtypes <= set(IN_OUTPUT_DTYPES)


FUSED = Plan(groups=(), name="fused")
AUTO = Plan(groups=(), name="auto")  # resolved per site by a chooser (fxsoftmax.auto.chooser.AutoChooser)

PolicyLike = Union[str, Plan]
_TOKEN = re.compile(r"\(13\)|[1-4]'?")


def parse_plan(text: str) -> Plan:
    """Parse and validate a plan string like "12|34" or "1|2'3|2'4"."""
    if not isinstance(text, str):
        raise ValueError(f"a plan must be a string, got {type(text).__name__}; {_accepted()}")
    src = re.sub(r"\s+", "", text)
    if not src:
        raise ValueError(f"empty plan; {_accepted()}")
    groups: list[tuple[str, ...]] = []
    for gtext in src.split("|"):
        if not gtext:
            raise ValueError(f"plan {text!r} has an empty group; {_accepted()}")
        if not re.fullmatch(f"(?:{_TOKEN.pattern})+", gtext):
            raise ValueError(f"plan {text!r}: group {gtext!r} is not a sequence of steps 1-4 (each optionally followed by ') or (13); {_accepted()}")
        groups.append(tuple(t.strip("()") for t in _TOKEN.findall(gtext)))
    plan = Plan(groups=tuple(groups))
    _validate(plan, text)
    return plan


def _validate(plan: Plan, text: str) -> None:
    def fail(why: str) -> None:
        raise ValueError(f"plan {text!r}: {why}; {_accepted()}")

    where: dict[int, int] = {}  # step number -> group index where it is computed unmarked
    for gi, group in enumerate(plan.groups):
        for t in group:
            for n in steps.numbers(t) if not steps.is_recomputed(t) else ():
                if n in where:
                    fail(f"step {n} is computed in group {where[n] + 1} and again in group {gi + 1}; mark a recomputation with ' (e.g. {n}')")
                where[n] = gi
    missing = [n for n in range(1, 5) if not any(n in steps.numbers(t) for g in plan.groups for t in g)]
    if missing:
        fail(f"step(s) {missing} missing; every step 1-4 must appear")
    if where.get(4) != len(plan.groups) - 1:
        fail("step 4 (the output) must be computed, unmarked, in the last group")
    stored: set[str] = set()
    for gi, group in enumerate(plan.groups):
        local: set[str] = set()
        for ti, t in enumerate(group):
            if set(steps.writes(t)) & local:
                fail(f"step {t} appears twice in group {gi + 1}")
            if steps.is_recomputed(t) and set(steps.writes(t)) & stored:
                stored_in = where[steps.numbers(t)[0]] + 1
                fail(f"step {t} in group {gi + 1} recomputes step {steps.key(t)}, which group {stored_in} already stores; use one or the other")
            for value in steps.reads(t):
                if value == "x" or value in local or value in stored:
                    continue
                dep = steps.NUMBER[value]
                if any(value in steps.writes(u) for u in group[ti + 1:]):
                    why = f"step {dep} comes after it in the same group (steps in a group run left to right)"
                elif where.get(dep, -1) > gi:
                    why = f"step {dep} is only computed later, in group {where[dep] + 1} (a stored step used before it exists)"
                else:
                    why = f"no earlier group stores step {dep} and this group does not recompute it (write {dep}')"
                fail(f"step {t} in group {gi + 1} needs step {dep}, but {why}")
            local |= set(steps.writes(t))
        for t in group:
            if steps.is_recomputed(t) and not any(set(steps.writes(t)) & set(steps.reads(u)) for u in group):
                fail(f"recomputed step {t} in group {gi + 1} is not used in that group")
        stored |= {v for t in group if not steps.is_recomputed(t) for v in steps.writes(t)}


def parse_policy(policy: PolicyLike) -> Plan:
    """Turn a preset name, a plan string or a Plan into a validated Plan."""
    if isinstance(policy, Plan):
        return policy if not policy.groups or policy.in_output else parse_plan(policy.text)
    if not isinstance(policy, str):
        raise ValueError(f"policy must be a string or Plan, got {type(policy).__name__}; {_accepted()}")
    key = policy.strip()
    if key == "fused":
        return FUSED
    if key == "auto":
        return AUTO
    if key == IN_OUTPUT:
        return Plan(groups=parse_plan(IN_OUTPUT_PLAN).groups, name=IN_OUTPUT)
    if key in PRESETS:
        return Plan(groups=parse_plan(PRESETS[key]).groups, name=key)
    if not re.fullmatch(r"[1-4'|()\s]*", key):
        raise ValueError(f"unknown policy {policy!r}; {_accepted()}")
    plan = parse_plan(key)
    named = next((k for k, v in PRESETS.items() if v == plan.text), None)
    return Plan(groups=plan.groups, name=named)


# A per-site override: glob patterns (or "re:<regex>") matched against a site's node name or module
# path, first match wins; or a callable that gets the site and returns a policy or None (= default).
Overrides = Union[Mapping[str, PolicyLike], Callable[[Any], Union[PolicyLike, None]]]


class PolicyMap:
    """Decides the Plan for each softmax site: a default policy plus optional overrides. `auto` is
    resolved by `chooser(site) -> (Plan, reason)`, which the caller passes."""

    def __init__(self, policy: PolicyLike = DEFAULT_POLICY, overrides: Overrides | None = None, chooser: Any = None):
        self.default = parse_policy(policy)
        self.chooser = chooser
        self._fn: Callable[[Any], PolicyLike | None] | None = None
        self._patterns: list[tuple[str, Callable[[str], bool], Plan]] = []
        if overrides is None:
            return
        if callable(overrides):
            self._fn = overrides
            return
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"overrides must be a mapping {{pattern: policy}} or a callable(site) -> policy|None, "
                f"got {type(overrides).__name__}"
            )
        for pattern, pol in overrides.items():
            self._patterns.append((pattern, _compile_pattern(pattern), parse_policy(pol)))

    def plan_for(self, site: Any) -> tuple[Plan, str]:
        """The site's plan and why (non-empty for `auto`)."""
        plan = self._policy_for(site)
        if not plan.is_auto:
            return plan, ""
        if self.chooser is None:
            raise ValueError(f"policy 'auto' for site {site.name!r} needs a chooser (e.g. fxsoftmax.auto.AutoChooser)")
        return self.chooser(site)

    def _policy_for(self, site: Any) -> Plan:
        if self._fn is not None:
            chosen = self._fn(site)
            if chosen is None:
                return self.default
            try:
                return parse_policy(chosen)
            except ValueError as e:
                raise ValueError(f"override callable returned an invalid policy for site {site.name!r}: {e}") from None
        for _, matches, plan in self._patterns:
            if matches(site.name) or (site.module_path and matches(site.module_path)):
                return plan
        return self.default

    def check_matched(self, sites: list[Any]) -> None:
        """Raise if an override pattern matched none of `sites` (almost always a typo)."""
        for pattern, matches, _ in self._patterns:
            if not any(matches(s.name) or (s.module_path and matches(s.module_path)) for s in sites):
                known = ", ".join(f"{s.name} ({s.module_path or 'no module path'})" for s in sites) or "none"
                raise ValueError(
                    f"override pattern {pattern!r} matched no softmax site; patterns are globs (or "
                    f"'re:<regex>') matched against node names and module paths; sites: {known}"
                )


def _compile_pattern(pattern: Any) -> Callable[[str], bool]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(
            f"override pattern {pattern!r} is not a non-empty string; accepted: a glob such as "
            "'encoder.layer.*' or 're:<regex>', matched against node names and module paths"
        )
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as e:
            raise ValueError(f"override pattern {pattern!r} is not a valid regular expression: {e}") from None
        return lambda s: rx.fullmatch(s) is not None
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"override pattern {pattern!r} has unbalanced [ ]; accepted: a glob such as 'encoder.layer.*'")
    return lambda s: fnmatch.fnmatchcase(s, pattern)
