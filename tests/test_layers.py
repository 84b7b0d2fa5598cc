"""The layering of the packages, and no import circle between any two modules.

Top to bottom: the command line, the client tools, the HTTP edge, configuration, tenancy,
the limit stores, the pipeline, the answer cache, the vendor adapters, observability, the
detectors. A module may import its own package and the packages below it, never one above.
Two packages stand apart: `quota` (the limit stores) and `guard` (the detectors) import
nothing of the project's.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("cli", "tools", "app", "config", "tenancy", "quota", "streaming", "cache",
          "providers", "telemetry", "guard")
STAND_APART = frozenset({"quota", "guard"})


def modules() -> dict[str, Path]:
    """Every module of the project by dotted name; a package's `__init__` by the package's."""
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules `path` imports: `from pkg import mod` names the module itself."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                       else node.module for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module `a.b`
                target = target.rpartition(".")[0]
            if target:
                yield target


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports_of(path, known)) - {name} for name, path in known.items()}


def allowed(package: str) -> set[str]:
    if package in STAND_APART:
        return {package}
    return set(LAYERS[LAYERS.index(package):])


def test_every_package_of_the_project_has_its_place_in_the_layers() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_itself_and_the_layers_below(package: str) -> None:
    graph = import_graph()
    offenders = {module: sorted(target for target in targets
                                if target.split(".")[0] not in allowed(package))
                 for module, targets in graph.items() if module.split(".")[0] == package}
    assert {module: found for module, found in offenders.items() if found} == {}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_even_by_way_of_others() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_circles() -> None:
    """The test above can fail: a circle through a third module is found."""
    graph = {"a.x": {"b.y"}, "b.y": {"c.z"}, "c.z": {"a.x"}, "d.w": {"a.x"}}
    assert circles(graph) == [["a.x", "b.y", "c.z"]]
