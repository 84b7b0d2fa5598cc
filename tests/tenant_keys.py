"""Tenants and keys for the tests, written to a real config file the way an operator would."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tenancy.identity import hashed_form

ACME_KEY = "hs_acme_0123456789abcdef"
ALICE_KEY = "hs_acme_alice_0123456789"
GLOBEX_KEY = "hs_globex_0123456789abcd"
ADMIN_KEY = "hs_admin_0123456789abcde"
BEARER = {"Authorization": f"Bearer {ACME_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tenants_toml(acme: Mapping[str, object] | None = None,
                 globex: Mapping[str, object] | None = None, extra: str = "") -> str:
    """acme (keys: ACME_KEY, and ALICE_KEY as user alice) and globex, plus an admin key."""
    def table(name: str, keys: str, settings: Mapping[str, object] | None) -> str:
        lines = [f"[tenants.{name}]", f"keys = {keys}"]
        lines += [f"{key} = {_toml(value)}" for key, value in (settings or {}).items()]
        return "\n".join(lines)

    return "\n\n".join([
        table("acme", f'["{hashed_form(ACME_KEY)}", '
                      f'{{ sha256 = "{hashed_form(ALICE_KEY)}", user = "alice" }}]', acme),
        table("globex", f'["{hashed_form(GLOBEX_KEY)}"]', globex),
        f'[admin]\nkeys = ["{hashed_form(ADMIN_KEY)}"]',
        extra,
    ]) + "\n"


def config_env(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "hello-ship.toml"
    path.write_text(text)
    return {"HELLO_SHIP_CONFIG": str(path)}


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)
