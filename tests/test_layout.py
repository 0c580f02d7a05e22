"""The package's shape stays what docs/architecture.md says: short functions, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fastagent"
#: Functions that are argument tables: long because they list every option, not because
#: they do many things.
TABLES = {"add_arguments"}
MAX_LINES = 80


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES and node.name not in TABLES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports, anywhere but under ``if TYPE_CHECKING``."""
    package = (
        name
        if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists()
        else name.rpartition(".")[0]
    )
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def test_no_import_cycles() -> None:
    trees = modules()
    known = set(trees)
    graph = {name: _imports(name, tree, known) for name, tree in trees.items()}
    # a package's __init__ importing its own submodules lazily is not a cycle
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, cycles


def test_the_measured_modules_do_not_import_the_rest() -> None:
    """Nothing outside sim/ and analysis/ imports them (but sim.launcher, the launcher).

    The coordinator of --shards (fastagent.shards) runs in a process of its own too; of it
    the measured process imports only the package and shards.split (a shard's task list).
    """
    trees = modules()
    known = set(trees)
    offenders = []
    for name, tree in trees.items():
        if name.startswith(("fastagent.sim", "fastagent.analysis")):
            continue
        if name.startswith("fastagent.shards.") and name != "fastagent.shards.split":
            continue
        for target in _imports(name, tree, known):
            if target.startswith("fastagent.analysis") or (
                target.startswith("fastagent.sim")
                and target != "fastagent.sim.launcher"
                and target != "fastagent.sim"
            ):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders
