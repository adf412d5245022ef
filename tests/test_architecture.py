"""The import graph of energy_hpc/ has no cycles, and the leaf modules import nothing of the project.

Function-level imports count: a cycle closed inside a function still means neither module can be read,
tested or moved without the other. The graph is read from the source with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "energy_hpc"

# modules that must import nothing of energy_hpc (they are what everything else builds on)
LEAVES = ("energy_hpc.errors", "energy_hpc.jobtypes", "energy_hpc.logs", "energy_hpc.settings")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(module: str, is_package: bool, level: int, name: str) -> str:
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the energy_hpc modules it imports anywhere in its source (module or function level)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module or "")
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith("energy_hpc"):
                    continue
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found, "import cycles in energy_hpc/: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_the_project(leaf):
    graph = import_graph()
    assert leaf in graph, f"{leaf} does not exist"
    assert graph[leaf] == set(), f"{leaf} imports {sorted(graph[leaf])}"


# docs/architecture.md draws the import graph between the parts of the package in a fenced block
# tagged `imports`: one line a part, `part: what it imports`. A part is a module path below energy_hpc;
# a module belongs to the longest part that names it or a package above it.
DOC = PACKAGE.parent / "docs" / "architecture.md"


def documented_graph() -> dict[str, set[str]]:
    text = DOC.read_text()
    start = text.index("```imports\n") + len("```imports\n")
    block = text[start : text.index("```", start)]
    graph: dict[str, set[str]] = {}
    for line in block.splitlines():
        if not line.strip():
            continue
        part, _, deps = line.partition(":")
        graph[part.strip()] = {d.strip() for d in deps.split(",") if d.strip() and d.strip() != "-"}
    return graph


def part_of(module: str, parts: set[str]) -> str:
    name = module.removeprefix("energy_hpc").lstrip(".") or "__init__"
    while name not in parts:
        if "." not in name:
            raise AssertionError(f"{module} belongs to no part named in docs/architecture.md")
        name = name.rsplit(".", 1)[0]
    return name


def test_architecture_doc_draws_the_import_graph_as_it_is():
    documented = documented_graph()
    parts = set(documented)
    actual: dict[str, set[str]] = {p: set() for p in parts}
    for module, targets in import_graph().items():
        here = part_of(module, parts)
        for target in targets:
            there = part_of(target, parts)
            if there != here:
                actual[here].add(there)
    wrong = {
        p: (sorted(actual[p] - documented[p]), sorted(documented[p] - actual[p]))
        for p in sorted(parts)
        if actual[p] != documented[p]
    }
    assert not wrong, "docs/architecture.md's import graph is out of date (part: (missing, extra)): " + str(
        wrong
    )
