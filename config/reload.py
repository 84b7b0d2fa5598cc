"""Reading the configuration again while the service runs: which files it comes from, whether
they changed, and what of them may replace the running configuration.

The running routes were built at start-up and stay as they are until a restart: a reload
takes from the files the keys and policies of tenants, the prices of the running routes, and
each running route's key, read again from the file that route was started with. The whole
file must still pass every check start-up makes.

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
from config.models import check_tenant_models
from config.routes import key_from_file
from config.settings import Settings
from config.tenants import read_prices
from providers.credentials import KeySource, Secret
from providers.spec import RouteSpec
from quota.prices import Price
from tenancy.identity import Tenancy

# Tables of the config file that take effect only at start-up: a change to them is reported
# as waiting for a restart, never half applied.
RESTART_TABLES = ("routes", "guard")
FileState = tuple[int, ...] | str  # (device, inode, size, mtime) or why it cannot be read


@dataclass(frozen=True, slots=True)
class Reread:
    tenancy: Tenancy
    prices: Mapping[str, Price]  # of the running routes
    keys: Mapping[str, KeySource]  # running route name -> its key, read again
    rotated: tuple[str, ...]  # routes whose key changed
    restart_needed: tuple[str, ...]  # what changed but waits for a restart


def watched_files(env: Mapping[str, str], running: Settings) -> tuple[str, ...]:
    """The config file and the key file of every running route."""
    files = [path for path in (EnvReader(env).raw(CONFIG_VAR),) if path]
    files += [path for path in map(_key_file, running.routes) if path is not None]
    return tuple(files)


def file_states(paths: tuple[str, ...]) -> tuple[FileState, ...]:
    """What each path resolves to now; any difference means a file was written or swapped."""
    states: list[FileState] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            states.append((exc.strerror if isinstance(exc, OSError) else None)
                          or type(exc).__name__)
        else:
            states.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(states)


def reread(env: Mapping[str, str], running: Settings,
           started_with: Mapping[str, Any]) -> Reread:
    """What of the files may replace the running configuration, or `SettingsError` saying
    why nothing may.

    A running route that has a key must still have one: a key file caught empty, missing or
    unreadable mid-rotation keeps the running key.
    """
    new = Settings.from_env(env)  # the whole file passes start-up's checks, or nothing applies
    config = load_config_file(EnvReader(env))
    check_tenant_models(new.tenancy, running.models)
    prices = read_prices(_priced(config, running.routes), running.routes, new.tenancy)
    keys: dict[str, KeySource] = {}
    rotated = []
    for route in running.routes:
        path = _key_file(route)
        if path is None:
            continue
        source = key_from_file(path)
        old_key = route.credentials.key if route.credentials else None
        if source.key is None:
            if old_key is not None:
                raise SettingsError(f"route {route.name}", f"its key is gone ({source.remedy}); "
                                                           "the running key stays")
            continue
        keys[route.name] = source
        if not _same(old_key, source.key):
            rotated.append(route.name)
    return Reread(new.tenancy, prices, keys, tuple(rotated),
                  _restart_needed(config, started_with))


def _key_file(route: RouteSpec) -> str | None:
    return route.credentials.file if route.credentials is not None else None


def _priced(config: Mapping[str, Any], routes: tuple[RouteSpec, ...]) -> dict[str, Any]:
    """The file's prices of the running routes only: a route the file adds or renames runs
    after a restart, and its price with it."""
    names = {route.name for route in routes}
    prices = config.get("prices", {})
    return {"prices": {name: price for name, price in prices.items() if name in names}}


def _restart_needed(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[str, ...]:
    changed = [table for table in RESTART_TABLES if new.get(table) != old.get(table)]
    if _tenant_guards(new) != _tenant_guards(old):
        changed.append("tenants.*.guard")
    return tuple(changed)


def _tenant_guards(config: Mapping[str, Any]) -> dict[str, object]:
    tenants = config.get("tenants")
    if not isinstance(tenants, dict):
        return {}
    return {name: entry["guard"] for name, entry in tenants.items()
            if isinstance(entry, dict) and "guard" in entry}


def _same(old: Secret | None, new: Secret) -> bool:
    return old is not None and hmac.compare_digest(old.reveal().encode(), new.reveal().encode())
