"""What a re-read of the files may change in a running service, decided in config.reload
against the configuration the service started with; the service side is in
tests/app/test_key_rotation.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.env import EnvReader, SettingsError
from config.file import load_config_file
from config.reload import file_states, reread, watched_files
from config.settings import Settings
from tenancy.identity import hashed_form

KEY = "sk-running-key-0123456789"
ROUTE = "openai/gpt-4o-mini"


def route_table(key_file: Path, model: str = "gpt-4o-mini",
                base_url: str = "http://127.0.0.1:9/v1") -> str:
    return (f'[[routes]]\nprovider = "openai"\nmodel = "{model}"\nbase_url = "{base_url}"\n'
            f'api_key_file = "{key_file}"\n')


TENANT = f'[tenants.acme]\nkeys = ["{hashed_form("hs_client_key")}"]\ndaily_budget_usd = 5\n'


def price(route: str) -> str:
    return f'[prices."{route}"]\ninput = 0.15\noutput = 0.6\n'


class Deployment:
    """A config file and a key file as a service started with them, and re-reads of both."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.dir = tmp_path
        self.key_file = tmp_path / "openai"
        self.key_file.write_text(KEY)
        self.config = tmp_path / "hello-ship.toml"
        self.config.write_text(text.format(key_file=self.key_file))
        self.env = {"HELLO_SHIP_CONFIG": str(self.config)}
        self.running = Settings.from_env(self.env)
        self.started_with: dict[str, Any] = load_config_file(EnvReader(self.env))

    def reread_with(self, text: str) -> Any:
        self.config.write_text(text.format(key_file=self.key_file))
        return reread(self.env, self.running, self.started_with)


BASE = route_table(Path("{key_file}")) + TENANT + price(ROUTE)


def test_a_changed_route_waits_for_a_restart_and_keeps_its_own_key_file(tmp_path: Path) -> None:
    """The route still runs against its old endpoint: a key meant for the new one must not
    be sent there, so the key is read from the file the route started with."""
    deployment = Deployment(tmp_path, BASE)
    other_key = tmp_path / "other"
    other_key.write_text("sk-key-of-another-vendor-000")
    changed = (route_table(other_key, base_url="http://127.0.0.2:9/v1") + TENANT
               + price(ROUTE)).replace("{", "{{").replace("}", "}}")
    result = deployment.reread_with(changed)
    assert result.restart_needed == ("routes",)
    assert result.rotated == ()
    assert watched_files(deployment.env, deployment.running) == (
        str(deployment.config), str(deployment.key_file))

    deployment.key_file.write_text("sk-rotated-key-9876543210")
    assert deployment.reread_with(changed).rotated == (ROUTE,)


def test_a_renamed_route_cannot_take_the_running_routes_price_with_it(tmp_path: Path) -> None:
    """The running route would go unpriced and its USD budget unenforced: refused."""
    deployment = Deployment(tmp_path, BASE)
    renamed = route_table(Path("{key_file}"), model="gpt-4o") + TENANT + price("openai/gpt-4o")
    with pytest.raises(SettingsError, match=f"route {ROUTE} has no price"):
        deployment.reread_with(renamed)


def test_new_prices_of_the_running_routes_apply(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, BASE)
    result = deployment.reread_with(BASE.replace("input = 0.15", "input = 0.30"))
    assert result.prices[ROUTE].input_per_m == 0.30
    assert result.restart_needed == ()


@pytest.mark.parametrize(("content", "reason"), [
    ("", "is empty"),
    (f"{KEY}\nsk-second-key-0000000000", "holds more than one key"),
    ("sk-half written", "whitespace"),
])
def test_a_key_file_that_no_vendor_would_take_keeps_the_running_key(
        tmp_path: Path, content: str, reason: str) -> None:
    deployment = Deployment(tmp_path, BASE)
    deployment.key_file.write_text(content)
    with pytest.raises(SettingsError, match=f"its key is gone.*{reason}"):
        deployment.reread_with(BASE)


def test_tenants_come_and_go_without_calling_for_a_restart(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, BASE)
    added = BASE + f'[tenants.globex]\nkeys = ["{hashed_form("hs_other")}"]\n'
    result = deployment.reread_with(added)
    assert result.restart_needed == ()
    assert set(result.tenancy.policies) == {"acme", "globex"}
    guarded = added + '[tenants.globex.guard]\ninput_pii = "refuse"\n'
    assert deployment.reread_with(guarded).restart_needed == ("tenants.*.guard",)


def test_a_config_file_that_is_not_utf8_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, BASE)
    deployment.config.write_bytes(b"[tenants.acme]\nkeys = ['\xff']\n")
    with pytest.raises(SettingsError, match="is not UTF-8 text"):
        reread(deployment.env, deployment.running, deployment.started_with)


def test_a_path_no_file_can_have_is_a_state_not_an_exception(tmp_path: Path) -> None:
    """A NUL in a configured path would otherwise end the watch (and the app with it)."""
    missing, bad = str(tmp_path / "missing"), str(tmp_path / "k\x00ey")
    assert file_states((missing, bad)) == ("No such file or directory", "ValueError")
