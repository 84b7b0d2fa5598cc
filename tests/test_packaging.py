"""Every package of the layers is installed, type-checked and copied into the image."""

from __future__ import annotations

import re
import tomllib

from tests.test_layers import LAYERS, ROOT


def test_pyproject_installs_and_checks_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(pyproject["tool"]["setuptools"]["packages"]) == set(LAYERS)
    assert set(pyproject["tool"]["mypy"]["packages"]) == set(LAYERS)


def test_the_image_copies_every_package() -> None:
    copied = re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Containerfile").read_text(), re.M)
    assert sorted(copied) == sorted(LAYERS)
