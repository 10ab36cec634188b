"""The package structure (docs/architecture.md), checked from the source: no cycle between packages, ``algo/``
imports nothing of the project but the registry, and no module reaches into another package's private
names."""

import ast
from pathlib import Path

import grouprl

ROOT = Path(grouprl.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """``grouprl.<package>`` (a top-level module is its own package)."""
    return ".".join(module.split(".")[:2])


def _imports() -> list[tuple[str, str, list[str]]]:
    """``(importer, imported module, names)`` for every ``grouprl`` import, lazy ones included."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        importer = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ImportFrom) and node.level == 0
                    and (node.module or "").startswith("grouprl")):
                out.append((importer, node.module, [alias.name for alias in node.names]))
            elif isinstance(node, ast.Import):
                out += [(importer, alias.name, []) for alias in node.names
                        if alias.name.startswith("grouprl")]
    return out


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for importer, imported, _ in _imports():
        a, b = _package(importer), _package(imported)
        if a != b and b != "grouprl":  # grouprl itself (__version__) imports nothing
            edges.setdefault(a, set()).add(b)
    return edges


def test_no_cycle_between_packages():
    edges, state, path = _graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != "open", f"package cycle: {' -> '.join(path[path.index(nxt):] + [nxt])}"
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_algo_imports_only_the_registry():
    assert _graph().get("grouprl.algo", set()) <= {"grouprl.registry"}


def test_no_private_name_across_packages():
    leaks = [f"{importer} imports {name} from {imported}" for importer, imported, names in _imports()
             for name in names
             if name.startswith("_") and not name.startswith("__")
             and _package(importer) != _package(imported)]
    assert not leaks
