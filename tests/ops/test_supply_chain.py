"""The hash-locked dependency files: in step with pyproject.toml, hashed throughout, and
audited so that a locked version with a fixed vulnerability fails the build."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What each lock installs, as pyproject.toml names it.
EXTRAS = {"runtime": (), "test": ("test",), "mutation": ("test", "mutation")}
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(lock: str) -> dict[str, tuple[str, str | None]]:
    """name -> (version, marker) of every package a lock file pins."""
    found = {}
    for line in (LOCKS / f"{lock}.txt").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = (match[2], match[3])
    return found


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements with these extras, self-references followed."""
    project = PYPROJECT["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "hello-ship":
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


@pytest.mark.parametrize("lock", sorted(EXTRAS))
def test_every_requirement_is_locked_at_a_version_its_range_allows(lock: str) -> None:
    """An edit to pyproject.toml without `make lock` is caught here, not by an install."""
    locked = pins(lock)
    for requirement in wanted(EXTRAS[lock]):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is required but not in requirements/{lock}.txt"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock}.txt has {name}=={version}, outside {requirement.specifier}")


def test_the_runtime_lock_holds_no_test_tools() -> None:
    """The image installs this file: pytest or ruff in it would ship in every image."""
    runtime = pins("runtime")
    for tool in ("pytest", "ruff", "mypy", "hypothesis", "playwright", "pip-audit"):
        assert tool not in runtime


@pytest.mark.parametrize("lock", [*sorted(EXTRAS), "build"])
def test_every_locked_package_carries_its_hashes(lock: str) -> None:
    """pip's --require-hashes refuses a file with one unhashed line: a package whose content
    changed on the index after locking then stops the install instead of running."""
    text = (LOCKS / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(entries) == len(pins(lock))
    for entry in entries:
        if entry.startswith("#"):
            continue
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]


def test_the_build_backend_is_locked_too() -> None:
    """The project itself is built without build isolation, from the locked setuptools."""
    requires = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    build = pins("build")
    for requirement in requires:
        assert requirement.specifier.contains(build[canonicalize_name(requirement.name)][0])


def test_a_lock_resolved_for_other_platforms_keeps_their_markers() -> None:
    """The locks are universal: uvloop has no Windows build, so its pin carries the marker."""
    _version, marker = pins("runtime")["uvloop"]
    assert marker is not None
    assert not Marker(marker).evaluate({"sys_platform": "win32"})


def _audit_script() -> ModuleType:
    path = ROOT / "scripts" / "audit-dependencies"
    loader = importlib.machinery.SourceFileLoader("audit_dependencies", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _report(*dependencies: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(dependencies), "fixes": []}


CLEAN = {"name": "orjson", "version": "3.13.0", "vulns": []}
FIXABLE = {"name": "h11", "version": "0.14.0", "vulns": [
    {"id": "GHSA-vqfr-h8mv-ghfj", "fix_versions": ["0.16.0"], "aliases": ["CVE-2025-43859"]}]}
UNFIXED = {"name": "somepkg", "version": "1.0", "vulns": [{"id": "PYSEC-0000-1",
                                                           "fix_versions": []}]}
UNAUDITED = {"name": "aioboto3", "skip_reason": "Dependency not found on PyPI and could not "
                                                "be audited: aioboto3 (15.5.0)"}


def test_a_vulnerability_with_a_fix_fails_the_audit(capsys: pytest.CaptureFixture[str]) -> None:
    audit = _audit_script()
    assert audit.verdict(_report(CLEAN, FIXABLE, UNAUDITED), allow_unaudited=True) == 1
    out = capsys.readouterr().out
    assert "h11 0.14.0: GHSA-vqfr-h8mv-ghfj (fixed in 0.16.0)" in out


def test_a_vulnerability_nobody_fixed_is_shown_without_failing(
        capsys: pytest.CaptureFixture[str]) -> None:
    audit = _audit_script()
    assert audit.verdict(_report(CLEAN, UNFIXED), allow_unaudited=False) == 0
    assert "warning: somepkg 1.0: PYSEC-0000-1 (no fixed release yet)" in capsys.readouterr().out


def test_packages_left_unaudited_fail_unless_allowed_and_are_counted(
        capsys: pytest.CaptureFixture[str]) -> None:
    audit = _audit_script()
    assert audit.verdict(_report(CLEAN, UNAUDITED), allow_unaudited=False) == 3
    assert audit.verdict(_report(CLEAN, UNAUDITED), allow_unaudited=True) == 0
    out = capsys.readouterr().out
    assert "1 packages NOT audited" in out
    assert "1 locked packages audited" in out


def test_pip_audit_refuses_a_lock_with_an_unhashed_line(tmp_path: Path) -> None:
    """The audit runs the real pip-audit over the file as the installs read it."""
    unhashed = tmp_path / "requirements.txt"
    unhashed.write_text("orjson==3.13.0\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "audit-dependencies"),
                             str(unhashed)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert "pip-audit did not report" in result.stderr


def test_the_locked_files_go_through_the_real_pip_audit() -> None:
    """pip-audit reads every lock as it stands (hashes required, nothing resolved); whether
    the vulnerability service answers depends on the network, what it read does not."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "audit-dependencies"),
                             "--allow-unaudited", str(LOCKS / "build.txt")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"audit-dependencies: 1 locked packages audited|1 packages NOT audited",
                     result.stdout), result.stdout
