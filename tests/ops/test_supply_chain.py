"""The hash-locked dependency files: in step with pyproject.toml, hashed throughout, and
audited so that a locked version with a fixed vulnerability fails the build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ops.fake_pypi import (
    Certificates,
    FakePyPI,
    certificates,
    fake_pypi,
    release,
    vulnerability,
)

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


# The audit end to end: the real script and pip-audit on a real hash-locked file, asking a
# fake pypi.org for PyPI's vulnerability data about each pinned version.
AUDIT = ROOT / "scripts" / "audit-dependencies"
H11_FIX = vulnerability("GHSA-vqfr-h8mv-ghfj", ["CVE-2025-43859"], ["0.16.0"])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def pypi(certs: Certificates) -> Iterator[FakePyPI]:
    with fake_pypi(certs) as fake:
        yield fake


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    """Two pinned, hashed packages, as `make lock` writes them; pip-audit downloads nothing,
    so the hashes are checked for form only."""
    path = tmp_path / "requirements.txt"
    path.write_text(f"h11==0.14.0 \\\n    --hash=sha256:{'1' * 64}\n"
                    f"orjson==3.13.0 \\\n    --hash=sha256:{'2' * 64}\n")
    return path


def audit(pypi: FakePyPI, lock: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """scripts/audit-dependencies as `make audit` runs it, its pip-audit talking to the fake."""
    # No proxy setting of the caller's (NO_PROXY above all) may route around the fake.
    env = {key: value for key, value in os.environ.items()
           if not key.lower().endswith("_proxy") and key.lower() != "curl_ca_bundle"}
    # pip-audit's HTTP cache lives under the user's cache directory: one of the test's own,
    # so that no answer comes from an earlier run or from the real PyPI.
    env.update(HTTPS_PROXY=pypi.proxy, https_proxy=pypi.proxy,
               REQUESTS_CA_BUNDLE=str(pypi.ca), HOME=str(lock.parent),
               XDG_CACHE_HOME=str(lock.parent / "cache"))
    return subprocess.run([sys.executable, str(AUDIT), *flags, str(lock)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_locked_version_with_a_fixed_vulnerability_fails_the_build(
        pypi: FakePyPI, lock: Path) -> None:
    """Even where the other packages go unaudited and that is allowed, as in `make test`.
    pip-audit names an advisory by its CVE (or PYSEC) alias where it has one."""
    pypi.releases[("h11", "0.14.0")] = release("h11", "0.14.0", [H11_FIX])
    result = audit(pypi, lock, "--allow-unaudited")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "audit-dependencies: h11 0.14.0: CVE-2025-43859 (fixed in 0.16.0)" in result.stdout
    assert "1 known vulnerabilities have a fix" in result.stdout
    assert "/pypi/h11/0.14.0/json" in pypi.asked


def test_a_vulnerability_nobody_fixed_is_a_warning(pypi: FakePyPI, lock: Path) -> None:
    pypi.releases[("h11", "0.14.0")] = release(
        "h11", "0.14.0", [vulnerability("PYSEC-2099-1", ["CVE-2099-0001"], [])])
    pypi.releases[("orjson", "3.13.0")] = release("orjson", "3.13.0", [])
    result = audit(pypi, lock)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("audit-dependencies: warning: h11 0.14.0: PYSEC-2099-1 (no fixed release yet)"
            in result.stdout)
    assert "2 locked packages audited" in result.stdout


def test_locked_versions_without_vulnerabilities_pass(pypi: FakePyPI, lock: Path) -> None:
    pypi.releases[("h11", "0.14.0")] = release("h11", "0.14.0", [])
    pypi.releases[("orjson", "3.13.0")] = release("orjson", "3.13.0", [])
    result = audit(pypi, lock)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "audit-dependencies: 2 locked packages audited, no known vulnerability with a fix"]
    assert sorted(pypi.asked) == ["/pypi/h11/0.14.0/json", "/pypi/orjson/3.13.0/json"]


def test_packages_the_service_does_not_know_fail_unless_allowed(
        pypi: FakePyPI, lock: Path) -> None:
    """PyPI answering 404 for every release, as the per-release route does on networks that
    reach the index but not that API."""
    refused = audit(pypi, lock)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "2 packages NOT audited" in refused.stdout
    allowed = audit(pypi, lock, "--allow-unaudited")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "2 packages NOT audited, e.g. h11: Dependency not found on PyPI" in allowed.stdout
    assert "0 locked packages audited" in allowed.stdout
    assert len(pypi.asked) == 4


def test_pip_audit_refuses_a_lock_with_an_unhashed_line(tmp_path: Path) -> None:
    """The audit runs the real pip-audit over the file as the installs read it."""
    unhashed = tmp_path / "requirements.txt"
    unhashed.write_text("orjson==3.13.0\n")
    result = subprocess.run([sys.executable, str(AUDIT), str(unhashed)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "pip-audit did not report" in result.stderr


def test_the_locked_files_go_through_the_real_pip_audit() -> None:
    """pip-audit reads every lock as it stands (hashes required, nothing resolved); whether
    the vulnerability service answers depends on the network, what it read does not."""
    result = subprocess.run([sys.executable, str(AUDIT), "--allow-unaudited",
                             str(LOCKS / "build.txt")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"audit-dependencies: 1 locked packages audited|1 packages NOT audited",
                     result.stdout), result.stdout
