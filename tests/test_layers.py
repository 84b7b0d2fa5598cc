"""Layers only look down: app -> streaming -> providers; quota (the limit stores) stands apart,
guard (the detectors) is a library below both the edge and the pipeline, and telemetry (the
metrics) sits below everything that counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "providers": {"app", "streaming", "quota", "guard"},
    "streaming": {"app", "quota"},
    "quota": {"app", "streaming", "providers", "guard"},
    "guard": {"app", "streaming", "providers", "quota", "telemetry"},
    "telemetry": {"app", "streaming", "providers", "quota", "guard"},
}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(layer: str) -> None:
    modules = sorted((ROOT / layer).glob("*.py"))
    assert modules
    offenders = {module.name: imported_packages(module) & FORBIDDEN[layer]
                 for module in modules}
    assert not {name: found for name, found in offenders.items() if found}
