"""Reading the configuration again while the service runs: which files it comes from, whether
they changed, and a new `Settings` checked in full against the one running.

Kubernetes updates a mounted Secret or ConfigMap by swapping a symlink to a new directory, so
a file is known by what its path resolves to now (device, inode, size, mtime), never by an
open handle or a directory event.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.env import EnvReader, SettingsError
from config.file import CONFIG_VAR, load_config_file
from config.settings import Settings
from providers.credentials import Secret

# Tables of the config file that take effect only at start-up: a change to them is reported
# as waiting for a restart, never half applied.
RESTART_TABLES = ("routes", "guard")
FileState = tuple[int, ...] | str  # (device, inode, size, mtime) or why it cannot be read


@dataclass(frozen=True, slots=True)
class Reread:
    settings: Settings
    config: Mapping[str, Any]  # the file's tables as read
    rotated: tuple[str, ...]  # routes whose key changed
    restart_needed: tuple[str, ...]  # tables that changed but wait for a restart


def watched_files(env: Mapping[str, str], settings: Settings) -> tuple[str, ...]:
    """The config file and every key file the running routes read."""
    files = [path for path in (EnvReader(env).raw(CONFIG_VAR),) if path]
    files += [route.credentials.file for route in settings.routes
              if route.credentials is not None and route.credentials.file is not None]
    return tuple(files)


def file_states(paths: tuple[str, ...]) -> tuple[FileState, ...]:
    """What each path resolves to now; any difference means a file was written or swapped."""
    states: list[FileState] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            states.append(exc.strerror or type(exc).__name__)
        else:
            states.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(states)


def reread(env: Mapping[str, str], running: Settings,
           running_config: Mapping[str, Any]) -> Reread:
    """The configuration as the files say now, or `SettingsError` saying why it cannot replace
    the running one.

    Everything start-up checks is checked again; in addition a route of the running chain must
    still have a key, so a key file caught empty or missing mid-rotation keeps the old key.
    """
    settings = Settings.from_env(env)
    config = load_config_file(EnvReader(env))
    new_routes = {route.name: route for route in settings.routes}
    rotated = []
    for route in running.routes:
        old_key = route.credentials.key if route.credentials else None
        new = new_routes.get(route.name)
        new_key = new.credentials.key if new is not None and new.credentials else None
        if old_key is not None and new is not None and new_key is None:
            remedy = new.credentials.remedy if new.credentials else "no key"
            raise SettingsError(f"route {route.name}", f"its key is gone ({remedy}); "
                                                       "the running key stays")
        if new_key is not None and not _same(old_key, new_key):
            rotated.append(route.name)
    return Reread(settings, config, tuple(rotated), _restart_needed(config, running_config))


def _restart_needed(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[str, ...]:
    changed = [table for table in RESTART_TABLES if new.get(table) != old.get(table)]
    if _tenant_guards(new) != _tenant_guards(old):
        changed.append("tenants.*.guard")
    return tuple(changed)


def _tenant_guards(config: Mapping[str, Any]) -> dict[str, object]:
    tenants = config.get("tenants")
    if not isinstance(tenants, dict):
        return {}
    return {name: entry.get("guard") for name, entry in tenants.items()
            if isinstance(entry, dict)}


def _same(old: Secret | None, new: Secret) -> bool:
    return old is not None and hmac.compare_digest(old.reveal().encode(), new.reveal().encode())
