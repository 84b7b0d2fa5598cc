"""Programs the tests run for real (redis-server, nginx, promtool), installed by `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def required_tool(name: str) -> str:
    """The program's path. Missing, its tests skip on a developer's machine and fail under
    CI=true, where a skip would hide that they never ran."""
    # Debian puts daemons in /usr/sbin, which is not on every user's PATH.
    binary = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if binary is None:
        reason = f"{name} is not installed (make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a program the tests started, killing it if it does not stop within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
