"""`X-Route`: an operator pins a request to one route of the chain, to evaluate each route."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx

from app.factory import create_app
from config.settings import Settings
from providers.errors import ProviderUnavailable
from tests.fakes import Fail, ScriptedProvider, words
from tests.servers import FAST_DEMO, thread_server
from tests.sse import parse_sse
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, bearer, config_env, tenants_toml


def chain() -> tuple[ScriptedProvider, ScriptedProvider]:
    return (ScriptedProvider(words("From the primary."), name="fake/primary"),
            ScriptedProvider(words("From the fallback."), name="fake/fallback"))


def test_open_mode_may_pin_each_route_and_nothing_else_is_tried() -> None:
    primary, fallback = chain()
    app = create_app(Settings.from_env(FAST_DEMO), [primary, fallback])
    with thread_server(app) as live, httpx.Client(timeout=10) as client:
        pinned = client.post(live.url + "/chat/stream", json={"message": "hi"},
                             headers={"X-Route": "fake/fallback"})
        chat = client.post(live.url + "/chat", json={"message": "hi"},
                           headers={"X-Route": "fake/fallback"}).json()
        unknown = client.post(live.url + "/chat", json={"message": "hi"},
                              headers={"X-Route": "nope/secret-name"})
    events = [item.data for item in parse_sse(pinned.text) if item.is_event]
    assert events[0]["model_route"] == "fake/fallback"
    assert chat["model_route"] == "fake/fallback" and chat["answer"] == "From the fallback."
    assert primary.started == 0 and fallback.started == 2
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_route"
    assert "secret-name" not in unknown.text


def test_a_pinned_route_that_fails_does_not_fall_back() -> None:
    primary, fallback = chain()
    primary.script = [Fail(ProviderUnavailable("down"))]
    settings = Settings.from_env({**FAST_DEMO, "MAX_ATTEMPTS": "1"})
    with thread_server(create_app(settings, [primary, fallback])) as live, \
            httpx.Client(timeout=10) as client:
        pinned = client.post(live.url + "/chat", json={"message": "hi"},
                             headers={"X-Route": "fake/primary"})
        unpinned = client.post(live.url + "/chat", json={"message": "hi"}).json()
    assert pinned.status_code == 503 and fallback.started == 1
    assert unpinned["model_route"] == "fake/fallback"


def test_only_an_admin_key_may_pin_once_keys_are_configured(tmp_path: Path) -> None:
    primary, fallback = chain()
    settings = Settings.from_env({**FAST_DEMO, **config_env(tmp_path, tenants_toml())})
    with thread_server(create_app(settings, [primary, fallback])) as live, \
            httpx.Client(timeout=10) as client:
        tenant = client.post(live.url + "/chat", json={"message": "hi"},
                             headers={**bearer(ACME_KEY), "X-Route": "fake/fallback"})
        admin = client.post(live.url + "/chat", json={"message": "hi"},
                            headers={**bearer(ADMIN_KEY), "X-Route": "fake/fallback"})
        usage = client.get(live.url + "/admin/usage/acme", headers=bearer(ADMIN_KEY))
    assert tenant.status_code == 403
    assert tenant.json()["error"]["code"] == "route_pin_forbidden"
    assert admin.status_code == 200 and admin.json()["model_route"] == "fake/fallback"
    assert usage.json()["today"]["requests"] == 0  # the admin's request is not acme's
    assert primary.started == 0 and fallback.started == 1


def test_a_disabled_route_cannot_be_pinned() -> None:
    primary, fallback = chain()
    settings = replace(Settings.from_env(FAST_DEMO), disabled_routes=frozenset({"fake/fallback"}))
    with thread_server(create_app(settings, [primary, fallback])) as live, \
            httpx.Client(timeout=10) as client:
        response = client.post(live.url + "/chat", json={"message": "hi"},
                               headers={"X-Route": "fake/fallback"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "route_disabled"
    assert fallback.started == 0
