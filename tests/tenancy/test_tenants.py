"""API keys decide the tenant: 401s, open mode, config validation and `hello-ship hash-key`."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.errors import refusal_error
from app.factory import create_app
from cli.main import main
from config.settings import Settings, SettingsError
from tenancy.errors import OpenModeRefused
from tenancy.identity import hashed_form
from tests.fakes import ScriptedProvider, words
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, app_server
from tests.tenant_keys import (
    ACME_KEY,
    ADMIN_KEY,
    ALICE_KEY,
    GLOBEX_KEY,
    bearer,
    config_env,
    tenants_toml,
)

BODY = {"message": "hello"}


def keyed_settings(tmp_path: Path, toml: str | None = None, **env: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **config_env(tmp_path, toml or tenants_toml()),
                              **env})


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
@pytest.mark.parametrize(("headers", "message"), [
    ({}, "Send your API key as 'Authorization: Bearer <key>'."),
    (bearer("hs_not_a_configured_key"), "The API key is not valid."),
    ({"Authorization": f"Basic {ACME_KEY}"}, "The API key is not valid."),
    ({"Authorization": "Bearer"}, "The API key is not valid."),
])
def test_a_missing_or_wrong_key_gets_401_before_any_provider_call(
        tmp_path: Path, path: str, headers: dict[str, str], message: str) -> None:
    provider = ScriptedProvider(words("never sent"))
    with captured_logs() as logs, app_server(keyed_settings(tmp_path), provider) as live:
        response = httpx.post(live.url + path, json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error == {"code": "unauthorized", "message": message,
                     "request_id": response.headers["x-request-id"]}
    assert provider.started == 0
    assert ACME_KEY not in "".join(logs.lines)


def test_the_key_names_the_tenant_and_user_in_the_logs_never_the_key(tmp_path: Path) -> None:
    # Logs captured until the server stops: `request_end` follows the answer out.
    with captured_logs() as logs, app_server(keyed_settings(tmp_path)) as live, \
            httpx.Client(timeout=10) as client:
        for key in (ACME_KEY, ALICE_KEY, GLOBEX_KEY):
            assert client.post(live.url + "/chat", json=BODY,
                               headers=bearer(key)).status_code == 200
    ends = [(r["tenant_id"], r["user_id"]) for r in logs.records("request_end")]
    assert ends == [("acme", None), ("acme", "alice"), ("globex", None)]
    text = "\n".join(logs.lines)
    assert not any(key in text for key in (ACME_KEY, ALICE_KEY, GLOBEX_KEY))


def test_the_body_cannot_name_a_tenant(tmp_path: Path) -> None:
    with app_server(keyed_settings(tmp_path)) as live:
        response = httpx.post(live.url + "/chat", json={**BODY, "tenant_id": "globex"},
                              headers=bearer(ACME_KEY))
    assert response.status_code == 422
    assert "unknown field" in response.json()["error"]["message"]


def test_an_admin_key_is_not_a_chat_key(tmp_path: Path) -> None:
    with app_server(keyed_settings(tmp_path)) as live:
        response = httpx.post(live.url + "/chat", json=BODY, headers=bearer(ADMIN_KEY))
    assert response.status_code == 401


def test_open_mode_serves_loopback_as_anonymous_and_refuses_other_addresses() -> None:
    open_settings = Settings.from_env({})
    assert open_settings.tenancy.open_mode
    with captured_logs() as logs, app_server(Settings.from_env(FAST_DEMO)) as live:
        assert httpx.post(live.url + "/chat", json=BODY).status_code == 200
    assert logs.records("request_end")[0]["tenant_id"] == "anonymous"
    with pytest.raises(SettingsError, match=r"open mode.*ALLOW_OPEN_MODE=true"):
        Settings.from_env({"HOST": "0.0.0.0"})
    assert Settings.from_env({"HOST": "0.0.0.0", "ALLOW_OPEN_MODE": "true"}).tenancy.open_mode
    assert Settings.from_env({"HOST": "::1"}).host == "::1"


def test_open_mode_off_loopback_is_refused_per_request_too() -> None:
    """`uvicorn app.main:app --host 0.0.0.0` never shows its address to start-up."""
    from tenancy.identity import Tenancy
    tenancy = Settings.from_env({}).tenancy
    assert tenancy.identify(None, local=True).tenant == "anonymous"
    with pytest.raises(OpenModeRefused) as caught:
        tenancy.identify(None, local=False)
    answer = refusal_error(caught.value)
    assert (answer.status, answer.code) == (503, "open_mode_refused")
    allowed = Tenancy(tenancy.default_policy, open_mode_anywhere=True)
    assert allowed.identify(None, local=False).tenant == "anonymous"


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_open_mode_reached_on_a_public_address_answers_with_the_envelope(
        path: str) -> None:
    provider = ScriptedProvider(words("never sent"))
    app = create_app(Settings.from_env(FAST_DEMO), provider)
    # A caller on another host, as `uvicorn app.main:app --host 0.0.0.0` would deliver it.
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:8080") as client:
        response = await client.post(path, json=BODY)
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "open_mode_refused", "request_id": response.headers["x-request-id"],
        "message": "This service has no API keys configured, so it only answers callers "
                   "on this host."}
    assert provider.started == 0


def test_open_mode_is_announced_at_start_up() -> None:
    with captured_logs() as logs, app_server(Settings.from_env(FAST_DEMO)):
        pass
    assert logs.records("open_mode")[0]["level"] == "warning"


def test_keys_serve_any_address(tmp_path: Path) -> None:
    assert keyed_settings(tmp_path, HOST="0.0.0.0").host == "0.0.0.0"


@pytest.mark.parametrize(("toml", "where", "reason"), [
    (f'[tenants.acme]\nkeys = ["{ACME_KEY}"]\n', "tenants.acme.keys", "never the key itself"),
    (f'[tenants.acme]\nkeys = ["{hashed_form(ACME_KEY)}"]\n[tenants.b]\n'
     f'keys = ["{hashed_form(ACME_KEY)}"]\n', "tenants.b.keys", "listed twice"),
    ("[tenants.acme]\nrpms = 5\n", "tenants.acme.rpms", "unknown key"),
    ("[tenants.acme]\nrpm = 0\n", "tenants.acme.rpm", "integer from 1 to"),
    ("[tenants.acme]\nmax_output_tokens = 5000000\n", "tenants.acme.max_output_tokens",
     "integer from 1 to 1000000"),
    ("[tenants.acme]\nrpm = 5\n", "tenants.acme.keys", "at least one key"),
    (f'[tenants.acme]\nkeys = ["{hashed_form(ACME_KEY)[7:]}"]\n', "tenants.acme.keys",
     "never the key itself"),
    ("[tenants.acme]\ndaily_budget_usd = -1\n", "tenants.acme.daily_budget_usd", "USD"),
    ('[tenants."a b"]\n', "tenants.a b", "tenant id"),
    ("[tenants.anonymous]\n", "tenants.anonymous", "tenant id"),
    ('[tenants.acme]\nkeys = [{ sha256 = "00", user = "x" }]\n', "tenants.acme.keys",
     "SHA-256 digest"),
    (f'[tenants.acme]\nkeys = ["{hashed_form(ACME_KEY)}"]\ndaily_budget_usd = 5.0\n'
     '[[routes]]\nprovider = "openai"\n'
     "model = \"gpt-4o-mini\"\n", "prices", "route openai/gpt-4o-mini has no price"),
    ('[prices."openai/nope"]\ninput = 1\noutput = 2\n', "prices.'openai/nope'",
     "not a route of the chain"),
    ('[prices."demo/hello-1"]\ninput = 1\n', "prices.'demo/hello-1'", "exactly input and output"),
    (f'[tenants.acme]\nkeys = ["{hashed_form(ACME_KEY)}"]\n[admin]\n'
     f'keys = ["{hashed_form(ACME_KEY)}"]\n', "admin.keys", "not also a tenant key"),
])
def test_a_bad_tenant_config_names_the_key(tmp_path: Path, toml: str, where: str,
                                           reason: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(reason)) as caught:
        Settings.from_env({**config_env(tmp_path, toml), "OPENAI_API_KEY": "sk-test"})
    assert caught.value.variable == f"HELLO_SHIP_CONFIG: {where}"


@pytest.mark.parametrize(("env", "variable"), [
    ({"RPM_PER_TENANT": "0"}, "RPM_PER_TENANT"),
    ({"DAILY_BUDGET_TOKENS": "lots"}, "DAILY_BUDGET_TOKENS"),
    ({"LIMITS_ON_REDIS_ERROR": "maybe"}, "LIMITS_ON_REDIS_ERROR"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ({"DAILY_BUDGET_USD": "1", "LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test"},
     "HELLO_SHIP_CONFIG: prices"),
])
def test_bad_limit_settings_stop_start_up(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_tenant_settings_override_the_environment_defaults(tmp_path: Path) -> None:
    settings = keyed_settings(
        tmp_path, tenants_toml(acme={"rpm": 5, "user_rpm": 2, "max_streams": 3,
                                     "daily_budget_tokens": 900, "daily_budget_usd": 1.5,
                                     "max_output_tokens": 64}),
        RPM_PER_TENANT="40", DAILY_BUDGET_TOKENS="5000", MAX_OUTPUT_TOKENS="300")
    acme = settings.tenancy.policy("acme")
    assert (acme.limits.rpm, acme.limits.user_rpm, acme.limits.streams) == (5, 2, 3)
    assert (acme.limits.daily_tokens, acme.limits.daily_nano_usd) == (900, 1_500_000_000)
    assert acme.max_output_tokens == 64
    globex = settings.tenancy.policy("globex")
    assert (globex.limits.rpm, globex.limits.daily_tokens, globex.max_output_tokens) == (
        40, 5000, 300)
    assert globex.limits.daily_nano_usd is None


def test_hash_key_prints_the_config_form(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["hash-key", "abc"]) == 0
    assert capsys.readouterr().out == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n")
    assert main(["hash-key"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key:\s+(\S+)", out)
    assert key is not None and f"config: {hashed_form(key[1])}" in out
    assert len(key[1]) >= 40
