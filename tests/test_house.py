"""The shape of the package: dependencies run one way between its layers, no module imports itself back
in a circle, the lowering has no long functions, and the README's Layout names the tree. Read from the source (every import, function-level
ones included), so a new module is checked without being listed."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fxsoftmax"
# Lowest first; a module may import its own layer and the ones before it.
LAYERS = [
    ("core", ("fxsoftmax.core", "fxsoftmax.quirks", "fxsoftmax.compat")),
    ("passes", ("fxsoftmax.passes",)),
    ("lowering", ("fxsoftmax.lowering",)),
    ("backends", ("fxsoftmax.backends",)),
    ("auto", ("fxsoftmax.auto",)),
    ("report", ("fxsoftmax.report",)),
    ("api", ("fxsoftmax.api",)),
    ("cli and tools", ("fxsoftmax.cli", "fxsoftmax.tools", "fxsoftmax.__main__", "fxsoftmax")),
]


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["fxsoftmax", *path.relative_to(PACKAGE).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports (a package's own name for `from pkg import x` of a non-module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fxsoftmax")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("fxsoftmax"):
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def _layer(module: str) -> int:
    """The layer of the longest prefix naming `module` (the package itself, "fxsoftmax", only by name)."""
    matches = [(len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
               if module == p or (p != "fxsoftmax" and module.startswith(p + "."))]
    return max(matches)[1]


def test_dependencies_run_one_way():
    mods = _modules()
    upward = []
    for name, path in mods.items():
        for dep in _imports(name, path, set(mods)):
            if _layer(dep) > _layer(name) and dep != "fxsoftmax":
                upward.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    mods = _modules()
    graph = {name: _imports(name, path, set(mods)) - {"fxsoftmax"} for name, path in mods.items()}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for dep in graph[node]:
            if dep in trail:
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, trail + [dep])
        done.add(node)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_layering_check_sees_a_violation():
    """The check above can fail: a pass importing the cost model would be reported."""
    assert _layer("fxsoftmax.auto.costmodel") > _layer("fxsoftmax.passes.decompose")
    assert _layer("fxsoftmax.tools.zoo") > _layer("fxsoftmax.api") > _layer("fxsoftmax.report.inspect")


def test_lowering_functions_are_short():
    long = []
    for path in (PACKAGE / "lowering").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def _readme_layout() -> dict[str, list[str]]:
    """The README's Layout block: each top-level folder it names, with the entries named under it."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    layout: dict[str, list[str]] = {}
    top = ""
    for line in block.splitlines():
        if line.strip() and not line.startswith(" " * 3):  # a continued description is indented further
            names = line.strip().split("  ")[0]
            if line.startswith(" "):
                layout[top] += [n.strip() for n in names.split(",")]
            else:
                top = names
                layout[top] = []
    return layout


def test_the_readme_layout_names_the_tree():
    """Every path the README's Layout names exists, and it names every module and subpackage of fxsoftmax."""
    layout = _readme_layout()
    root = PACKAGE.parent
    assert {"fxsoftmax/", "tests/", "docs/", "scripts/"} <= set(layout), layout
    missing = [top + n for top, names in layout.items() for n in [""] + names if not (root / top / n).exists()]
    assert not missing, f"named in the README's Layout but not in the tree: {missing}"
    entries = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries == set(layout["fxsoftmax/"]), f"in fxsoftmax/ but not in the Layout: {entries - set(layout['fxsoftmax/'])}"
