"""Dispatch inspection: which softmax step IREE put in which dispatch, what crosses, what sits on the stack.

Everything here is read from IREE's own output: the module is compiled to the flow level (dispatch
regions formed) with debug locations, and each op carries the `fxsoftmax:<site>:g<group>:s<step>` tag
the pass attached. CPU stack bytes come from the IR IREE checks against its stack limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..backends import entry, flags
from ..backends.artifact import Artifact
from ..backends.compiler import compile_cached
from ..backends.targets import Target
from ..core import steps
from ..core.dtypes import BY_MLIR
from ..core.status import SiteStatus
from ..core.tags import PATTERN as _TAG

_EXECUTABLE = re.compile(r"^\s*(?:flow|stream)\.executable\s+(?:private\s+)?@(\S+)\s*\{")
_FUNC = re.compile(r"^\s*func\.func\s+@([^(\s]+)\(")
_PROGRAM_FUNC = re.compile(r"^\s*util\.func\s+(?:public\s+|private\s+)?@([^(\s]+)\(")
_ARG = re.compile(r"dispatch\.tensor<(readonly|writeonly|readwrite):tensor<([^>]*)>>")
# fxsoftmax's hand-written executables (`inplace`) bind memrefs: the first is read, the second written
_SUBSPAN = re.compile(r"stream\.binding\.subspan .*-> memref<([^,>]*)")
_FLOAT_OP = re.compile(r"\b((?:arith\.(?!constant)\w+f)|(?:math\.\w+)|(?:linalg\.softmax))\b")


@dataclass
class TensorIO:
    type: str  # e.g. "128x16xf32"
    bytes: int | None  # None when a dimension is dynamic


@dataclass
class Executable:
    """One dispatch function IREE formed (identical ones are deduplicated and called several times)."""

    name: str
    reads: list[TensorIO] = field(default_factory=list)
    writes: list[TensorIO] = field(default_factory=list)
    steps: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # site -> group -> steps
    other_ops: list[str] = field(default_factory=list)  # float ops from outside any softmax (fused producers/consumers)
    stack_bytes: int | None = None  # CPU only
    dynamic_stack: bool = False


@dataclass
class DispatchCall:
    """One `flow.dispatch` in the program: a dispatch the runtime will launch."""

    executable: str
    sites: list[str]  # softmax sites named by the call's location
    groups: list[int]


@dataclass
class SiteDispatch:
    dispatch: str
    groups: list[int]
    steps: list[str]
    reads: list[str]  # tensor types read from global memory
    writes: list[str]  # tensor types written to global memory
    reads_bytes: int | None  # None when a dimension is dynamic
    writes_bytes: int | None
    stack_bytes: int | None
    other_ops: list[str]


@dataclass
class SiteInspection:
    site: str
    plan: str
    planned_groups: list[list[str]]
    dispatches: list[SiteDispatch]
    stored_bytes: int | None  # written by the site's dispatches for a later one (all but the last)
    exps_per_element: int
    matches_plan: bool
    problem: str = ""


@dataclass
class Report:
    target: str
    total_dispatches: int  # flow.dispatch ops in the program
    sites: list[SiteInspection]
    executables: list[Executable]
    calls: list[DispatchCall]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        sites = [
            SiteInspection(**{**s, "dispatches": [SiteDispatch(**x) for x in s["dispatches"]]}) for s in d["sites"]
        ]
        executables = [
            Executable(**{**e, "reads": [TensorIO(**t) for t in e["reads"]], "writes": [TensorIO(**t) for t in e["writes"]],
                          "steps": {k: {int(g): v for g, v in gs.items()} for k, gs in e["steps"].items()}})
            for e in d["executables"]
        ]
        return cls(d["target"], d["total_dispatches"], sites, executables, [DispatchCall(**c) for c in d["calls"]])

    def table(self) -> str:
        """A Markdown table, one row per (site, dispatch)."""
        rows = [
            f"IREE target {self.target}: {self.total_dispatches} dispatches in the module",
            "",
            "| site | plan | exps/elt | dispatch | steps | reads B | writes B | stack B | fused other ops | ok |",
            "|---|---|---:|---|---|---:|---:|---:|---|---|",
        ]
        for s in self.sites:
            for i, d in enumerate(s.dispatches):
                first = i == 0
                rows.append(
                    f"| {s.site if first else ''} | {s.plan if first else ''} | {s.exps_per_element if first else ''} "
                    f"| {d.dispatch} | {''.join(d.steps)} "
                    f"| {_fmt(d.reads_bytes, d.reads)} | {_fmt(d.writes_bytes, d.writes)} | {_fmt(d.stack_bytes)} "
                    f"| {', '.join(sorted(set(d.other_ops))) or '-'} | {('yes' if s.matches_plan else 'NO: ' + s.problem) if first else ''} |"
                )
        return "\n".join(rows)


def _fmt(v: int | None, types: list[str] | None = None) -> str:
    if v is None:
        return " + ".join(types) if types else "?"
    return f"{v:,}"


def _tensor_io(spec: str) -> TensorIO:
    *dims, elt = spec.split("x")
    size = BY_MLIR[elt].bytes if elt in BY_MLIR else None
    if size is None or any(d == "?" for d in dims):
        return TensorIO(spec, None)
    n = 1
    for d in dims:
        n *= int(d)
    return TensorIO(spec, n * size)


_CALL = re.compile(r"flow\.dispatch\s+@[^:\s]+::@([^(\[\s]+)[(\[]")


def parse_flow(flow_ir: str) -> tuple[list[Executable], list[DispatchCall]]:
    """Executables and dispatch calls of a module compiled with --compile-to=flow --mlir-print-debuginfo
    --mlir-print-local-scope.

    A step counts as inside an executable when one of its float compute ops carries the step's tag;
    constants, loads/stores and shape ops keep arbitrary locations and are ignored. A call belongs to
    the site its location names. Calls in the output-storage entry point (fxsoftmax.backends.entry), the
    same program again, are not counted.
    """
    executables: list[Executable] = []
    calls: list[DispatchCall] = []
    current: Executable | None = None
    closing = None  # the line that ends the current flow.executable
    program = ""  # the util.func the lines belong to
    for line in flow_ir.splitlines():
        if closing is None:
            if _EXECUTABLE.match(line):
                closing = line[: len(line) - len(line.lstrip())] + "}"
                continue
            f = _PROGRAM_FUNC.match(line)
            program = f.group(1) if f else program
            m = _CALL.search(line)
            if m and not program.startswith(entry.OUT):
                tags = _TAG.findall(line)
                calls.append(DispatchCall(m.group(1), _unique(t[0] for t in tags), sorted({int(t[1]) for t in tags})))
            continue
        if line.startswith(closing) and line[len(closing):].strip()[:3] in ("", "loc"):
            closing, current = None, None
            continue
        m = _FUNC.match(line)
        if m:
            current = Executable(m.group(1))
            executables.append(current)
            for mode, spec in _ARG.findall(line):
                (current.reads if mode == "readonly" else current.writes).append(_tensor_io(spec))
            continue
        if current is None:
            continue
        sub = _SUBSPAN.search(line)
        if sub:
            (current.writes if current.reads else current.reads).append(_tensor_io(sub.group(1)))
            continue
        ops = _FLOAT_OP.findall(line.split(" loc(")[0])
        if not ops:
            continue
        tags = _TAG.findall(line)
        for site, group, step in tags:
            _add_steps(current.steps.setdefault(site, {}).setdefault(int(group), []), step)
        if not tags:
            current.other_ops += ops
    return executables, calls


def _unique(items: Any) -> list:
    return list(dict.fromkeys(items))


def planned_groups(mlir: str) -> dict[str, dict[int, list[str]]]:
    """The groups the pass asked for, read from the tags in the MLIR it produced."""
    plans: dict[str, dict[int, list[str]]] = {}
    for site, group, step in _TAG.findall(mlir):
        _add_steps(plans.setdefault(site, {}).setdefault(int(group), []), step)
    return plans


def _add_steps(found: list[str], token: str) -> None:
    for step in [token] if token == "fused" else re.findall(r"\d'?", token):
        if step not in found:
            found.append(step)


def parse_stack(dump: str) -> dict[str, tuple[int, bool]]:
    """Per dispatch function: (static stack bytes, has a dynamically sized alloca), from an IR dump."""
    out: dict[str, tuple[int, bool]] = {}
    name = None
    for line in dump.splitlines():
        m = _FUNC.match(line)
        if m:
            name = m.group(1)
            out.setdefault(name, (0, False))
            continue
        if name and "memref.alloca(" in line:
            static, dynamic = out[name]
            mt = re.search(r":\s*memref<([^>]*)>", line)
            io = _tensor_io(mt.group(1).split(",")[0]) if mt else TensorIO("", None)
            if io.bytes is None or re.search(r"memref\.alloca\(\s*%", line):
                dynamic = True
            else:
                static += io.bytes
            out[name] = (static, dynamic)
    return out


def _sort_steps(tokens: list[str]) -> list[str]:
    return sorted(tokens, key=lambda t: (steps.key(t), t))


def inspect(source: Any, target: Target | str | None = None, *, stack: bool = True) -> Report:
    """Compile `source` (an Artifact, or MLIR text produced by fxsoftmax) to IREE's flow level and report
    per softmax site: its dispatches, the steps each holds, bytes in/out, and CPU stack bytes."""
    mlir, tgt, labels, flow_ir = _source(source, target)
    planned = planned_groups(mlir)
    statuses = [SiteStatus.FUSED if groups == {1: ["fused"]} else SiteStatus.REWRITTEN for groups in planned.values()]
    module = flags.module_flags(tgt, statuses)
    if not flow_ir:
        flow_ir = compile_cached(mlir, [*module, *flags.flow_level()], what="the module to the flow level").output.decode()
    executables, calls = parse_flow(flow_ir)
    if stack and tgt.kind == "cpu":
        dump = compile_cached(mlir, [*module, *flags.stack_dump()], what="the module's CPU executables").stderr
        stacks = parse_stack(dump)
        for e in executables:
            if e.name in stacks:
                e.stack_bytes, e.dynamic_stack = stacks[e.name]

    by_name = {e.name: e for e in executables}
    sites = [_inspect_site(site, groups, calls, by_name, labels.get(site)) for site, groups in planned.items()]
    return Report(str(tgt), len(calls), sites, executables, calls)


def _inspect_site(
    site: str, groups: dict[int, list[str]], calls: Sequence[DispatchCall], executables: dict[str, Executable], label: str | None
) -> SiteInspection:
    planned = [_sort_steps(groups[g]) for g in sorted(groups)]
    rows = []
    for call in calls:
        if site not in call.sites:
            continue
        exe = executables[call.executable]
        # Identical dispatches of several sites share one executable whose ops carry the first site's tags.
        tagged = exe.steps.get(site) or (next(iter(exe.steps.values())) if len(exe.steps) == 1 else {})
        rows.append(
            SiteDispatch(
                exe.name, sorted(tagged), _sort_steps([s for g in sorted(tagged) for s in tagged[g]]),
                [t.type for t in exe.reads], [t.type for t in exe.writes],
                _sum(t.bytes for t in exe.reads), _sum(t.bytes for t in exe.writes),
                None if exe.dynamic_stack else exe.stack_bytes, exe.other_ops,  # a dynamic alloca: no bound known
            )
        )
    problem = ""
    if planned == [["fused"]]:
        # left to IREE: any number of dispatches (a _safe_softmax becomes softmax + masked-row check)
        if not rows or any(r.steps != ["fused"] for r in rows):
            problem = f"IREE's softmax is not in dispatches of its own: {[r.steps for r in rows]}"
    elif len(rows) != len(planned):
        problem = f"{len(rows)} dispatches for {len(planned)} planned groups"
    else:
        for row, (gi, want) in zip(rows, sorted(groups.items())):
            if row.groups != [gi] or row.steps != _sort_steps(want):
                problem = f"{row.dispatch} holds groups {row.groups} steps {row.steps}, plan says group {gi} = {_sort_steps(want)}"
                break
    stored = _sum(r.writes_bytes for r in rows[:-1]) if len(rows) > 1 else 0
    plan_text = "|".join("".join(g) for g in planned)
    exps = steps.FUSED_EXPS if plan_text == "fused" else steps.exps_per_element(r.steps for r in rows)
    return SiteInspection(site, label or plan_text, planned, rows, stored, exps, not problem, problem)


def _sum(values: Any) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _source(source: Any, target: Target | str | None) -> tuple[str, Target, dict[str, str], str]:
    """MLIR, target, plan labels per site, and flow-level IR if already compiled."""
    source = getattr(source, "artifact", source)  # a torch.compile graph: its module
    if source is None:
        raise ValueError("this torch.compile graph runs in eager (it fell back); it has no IREE module to inspect")
    if isinstance(source, Artifact):
        labels = {s.name: s.plan for s in source.sites}
        if target is None or str(target) == str(source.target):
            return source.mlir, source.target, labels, source.flow_ir
        return source.mlir, target if isinstance(target, Target) else Target(target), labels, ""
    if isinstance(source, str):
        tgt = target if isinstance(target, Target) else Target(target or "cpu")
        return source, tgt, {}, ""
    raise TypeError(f"inspect expects an fxsoftmax Artifact, a compiled graph or MLIR text, got {type(source).__name__}")
