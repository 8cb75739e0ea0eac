"""The house's layering, measured from the imports (functions' own imports included), so a shortcut cannot creep in.

Nodes are the sub-packages (``data/``, ``training/``, ...) and the top-level files (``factory.py``, ``run.py``, ...):
no cycle between them, nothing below the runner imports analysis or rendering (``results/``) or the factory, and no
source file grows past 500 lines (``run.py`` past 350).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ferbench

PACKAGE = Path(ferbench.__file__).parent
LOW = ("records", "data", "training", "models", "attention")
"""Below the runner: may import each other (records lowest), never results/, the factory or the runner."""
ABOVE_LOW = {"results", "factory.py", "run.py", "tables.py", "cli.py", "gradcam.py", "bench"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    """``ferbench.data.splits`` -> ``data``; ``ferbench.factory`` -> ``factory.py``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ferbench"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return parts[1] + ".py"


def _imports(path: Path) -> set[str]:
    """Every ferbench module ``path`` imports, at the top or inside a function."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
    return {m for m in found if m == "ferbench" or m.startswith("ferbench.")}


def node_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _node(_module_name(path))
        for target in map(_node, _imports(path)):
            if target not in (source, "ferbench"):
                graph.setdefault(source, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of nodes, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_folders_and_top_level_files():
    assert find_cycle(node_graph()) is None


def test_nothing_below_the_runner_imports_analysis_factory_or_runner():
    graph = node_graph()
    upward = {(low, target) for low in LOW for target in graph.get(low, ()) if target in ABOVE_LOW}
    assert not upward, f"imports that run back up: {sorted(upward)}"


def test_source_files_stay_small():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert sizes["run.py"] < 350
    too_long = {name: n for name, n in sizes.items() if n > 500}
    assert not too_long, too_long
