"""Every package of the layers is installed, type-checked and copied into the image, with
the files it reads at run time."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

from tests.test_layers import LAYERS, ROOT


def test_pyproject_installs_and_checks_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    assert {name for name in packages if "." not in name} == set(LAYERS)
    assert set(pyproject["tool"]["mypy"]["packages"]) == set(LAYERS)
    # Folders of data files are packages of their own, or the build warns and may drop them.
    assert packages - set(LAYERS) == set(pyproject["tool"]["setuptools"]["package-data"]) - {
        name for name in LAYERS}


def test_the_image_copies_every_package() -> None:
    copied = re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Containerfile").read_text(), re.M)
    assert sorted(copied) == sorted(LAYERS)


def test_the_chat_pages_files_ship_in_the_package() -> None:
    """The image copies app/ whole but installs it as a wheel, which holds only the data files
    package-data names: a page file left out would be a 500 in the image, not in the tests."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["app.static"]
    files = [path.name for path in (ROOT / "app" / "static").iterdir()]
    assert files
    assert [name for name in files if not any(fnmatch(name, glob) for glob in globs)] == []


def test_the_build_context_lets_every_package_in() -> None:
    """The context is an allowlist: a package missing from it builds an image without it."""
    allowed = re.findall(r"^!(\w+)/$", (ROOT / ".containerignore").read_text(), re.M)
    assert set(LAYERS) <= set(allowed)


def test_docker_gets_the_same_build_context_as_podman() -> None:
    """Docker reads `Containerfile.dockerignore`, not `.containerignore`: without it a Docker
    build would send the virtualenv, .git and any key file in the tree to the builder."""
    assert (ROOT / "Containerfile.dockerignore").read_text() == (
        ROOT / ".containerignore").read_text()
