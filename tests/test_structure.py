"""The code's shape, read from the source with ``ast``: the layer rule, no import cycles, short
files and functions.

Layers, low to high: kd_core < runtimes < exporters < benchmarks; a package imports only its own
and lower layers. Every import counts, also the lazy ones inside functions (they still make the
modules depend on each other). A cycle is a chain of project modules that import one another.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("kd_core", "runtimes", "exporters", "benchmarks")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imported(name: str, tree: ast.Module) -> set[str]:
    """Project modules ``name`` imports (absolute and relative imports, at any depth)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imported(name, tree) for name, tree in TREES.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_every_package_imports_only_its_own_and_lower_layers() -> None:
    upward = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                    if _layer(t) > _layer(m))
    assert upward == []


def _cycle_from(start: str) -> list[str] | None:
    """A shortest import chain from ``start`` back to itself, if any (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for m in frontier:
            for t in sorted(GRAPH[m]):
                if t == start:
                    chain = [m]
                    while chain[-1] != start:
                        chain.append(parents[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if t not in parents:
                    parents[t] = m
                    nxt.append(t)
        frontier = nxt
    return None


def test_no_import_cycles() -> None:
    cycles = {" -> ".join(c) for m in GRAPH if (c := _cycle_from(m)) is not None}
    assert cycles == set()


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    """The check above can fail: plant a -> b -> a in a copy of the graph."""
    a, b = "kd_core.io", "kd_core.cli"
    saved = {a: set(GRAPH[a]), b: set(GRAPH[b])}
    GRAPH[a].add(b)
    GRAPH[b].add(a)
    try:
        assert _cycle_from(a) == [a, b, a]
    finally:
        GRAPH.update(saved)


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_files_and_functions_are_short() -> None:
    long_files = [f"{p.relative_to(ROOT)}: {n} lines" for p in MODULES.values()
                  if (n := p.read_text().count("\n")) > MAX_FILE_LINES]
    long_functions = [f"{MODULES[m].relative_to(ROOT)}:{f.lineno} {f.name}: {n} lines"
                      for m, tree in TREES.items() for f in _functions(tree)
                      if (n := (f.end_lineno or f.lineno) - f.lineno + 1) > MAX_FUNCTION_LINES]
    assert long_files == [] and long_functions == []
