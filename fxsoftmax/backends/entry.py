"""The module's entry points: `main`, as iree-turbine imports the program, and `main$out`, which writes
results into storage the caller provides (IREE's output storage: a torch mutable argument the result
overwrites, which IREE ties to the result's own allocation, so nothing is copied)."""

from __future__ import annotations

import torch

from .. import quirks

MAIN = "main"
OUT = "main$out"


def storable(ep: torch.export.ExportedProgram) -> list[bool]:
    """Per user output of the program: whether it can go into caller storage on this IREE
    (quirks.SOLE_USE_OUTPUT_STORAGE_FIXED_IN, quirks.output_storage_with_state). An input returned as it is
    never does."""
    from torch.export.graph_signature import OutputKind

    nodes = {n.name: n for n in ep.graph.nodes}
    names = [getattr(s.arg, "name", None) for s in ep.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    if not quirks.output_storage_with_state(bool(ep.graph_signature.buffers_to_mutate)):
        return [False] * len(names)
    sole_use = quirks.needed(quirks.SOLE_USE_OUTPUT_STORAGE_FIXED_IN)
    inputs = set(_tensor_inputs(ep))
    scattered = quirks.needed(quirks.SCATTER_INTO_STORAGE_FIXED_IN)
    out = []
    for i, name in enumerate(names):
        node = nodes.get(name)
        val = node.meta.get("val") if node is not None else None
        ok = node is not None and node.op == "call_function" and isinstance(val, torch.Tensor) and name not in names[:i]
        if ok and sole_use:
            ok = len(node.users) == 1 and not _is_view(node) and bool(_ancestors(node) & inputs)
        if ok and scattered:
            ok = not quirks.writes_into_operand(str(node.target))
        out.append(ok)
    return out


def written_inputs(ep: torch.export.ExportedProgram) -> list[int]:
    """Positions among the tensor inputs of those IREE may write into (quirks.writes_into_operand): the
    inputs a scatter-like op's destination is made from."""
    destinations = [n.args[0] for n in ep.graph.nodes if n.op == "call_function" and n.args
                    and quirks.writes_into_operand(str(n.target)) and isinstance(n.args[0], torch.fx.Node)]
    reached = set().union(*(_ancestors(d) for d in destinations))
    return [i for i, n in enumerate(_tensor_inputs(ep)) if n in reached]


def _tensor_inputs(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs
            and isinstance(n.meta.get("val"), torch.Tensor)]


def _ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    """The node and every node its value is computed from."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += n.all_input_nodes
    return seen


def _is_view(node: torch.fx.Node) -> bool:
    """Whether the op's result aliases one of its inputs (its schema says so: `Tensor(a) -> Tensor(a)`)."""
    schema = getattr(node.target, "_schema", None)
    return schema is None or any(r.alias_info is not None for r in schema.returns)


def signature(module) -> tuple[list[str], list[str]] | None:
    """(argument types, result types) of `main` in an iree-turbine module (an MLIR operation), as text."""
    from iree.compiler import ir

    for op in module.regions[0].blocks[0].operations:
        if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == MAIN:
            ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            return [str(t) for t in ftype.inputs], [str(t) for t in ftype.results]
    return None


def with_output_storage(asm: str, args: list[str], results: list[str], stored: list[bool]) -> str:
    """`asm` with a `main$out(args..., storage...)` that calls `main`, writes each `stored` result into its
    storage and returns the others; unchanged when no result is stored."""
    stored = [keep and r.startswith("!torch.vtensor<") for r, keep in zip(results, stored)]
    if len(stored) != len(results) or not any(stored):
        return asm
    storage = {i: r.replace("!torch.vtensor<", "!torch.tensor<", 1) for i, r in enumerate(results) if stored[i]}
    returned = [i for i in range(len(results)) if not stored[i]]
    params = [f"%a{i}: {t}" for i, t in enumerate(args)] + [f"%o{i}: {t}" for i, t in storage.items()]
    call = f"func.call @{MAIN}({', '.join(f'%a{i}' for i in range(len(args)))}) : ({', '.join(args)}) -> ({', '.join(results)})"
    head = f"  func.func @{OUT}({', '.join(params)})" + (f" -> ({', '.join(results[i] for i in returned)})" if returned else "")
    lines = [head + " {", f"    %r:{len(results)} = {call}"]
    lines += [f"    torch.overwrite.tensor.contents %r#{i} overwrites %o{i} : {results[i]}, {t}" for i, t in storage.items()]
    lines += [f"    return {', '.join(f'%r#{i}' for i in returned)} : {', '.join(results[i] for i in returned)}" if returned else "    return", "  }"]
    text = asm.splitlines()
    end = max(i for i, line in enumerate(text) if line.startswith("}"))  # the top-level module's closing brace
    return "\n".join(text[:end] + lines + text[end:]) + "\n"
