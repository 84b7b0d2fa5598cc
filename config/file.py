"""The optional TOML file (`HELLO_SHIP_CONFIG`): read once, its top-level tables checked.

Each table is read by its own module: `[[routes]]` by config.routes, `[tenants]`, `[admin]`,
`[metrics]` and `[prices]` by config.tenants, `[guard]` by config.guard.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from config.env import EnvReader, SettingsError

CONFIG_VAR = "HELLO_SHIP_CONFIG"
_TOP_LEVEL_KEYS = frozenset({"routes", "tenants", "admin", "metrics", "prices", "guard"})


def load_config_file(env: EnvReader) -> dict[str, Any]:
    """The TOML file `HELLO_SHIP_CONFIG` names, or an empty config when it is unset."""
    path = env.raw(CONFIG_VAR)
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(CONFIG_VAR, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:  # before ValueError-like TOML errors: the bytes, not the syntax
        raise SettingsError(CONFIG_VAR, f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(CONFIG_VAR, f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise SettingsError(CONFIG_VAR, f"unknown table or key {unknown[0]!r}; "
                                        f"this version reads: {', '.join(sorted(_TOP_LEVEL_KEYS))}")
    return data
