"""Tenant limits over real HTTP with the in-process store: rate limits, stream limits, token
caps, daily budgets with reservations, settlement, day rollover and the usage read-out."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import httpx
import orjson
import pytest

from app.factory import create_app
from config.settings import Settings
from providers.errors import ProviderUnavailable
from providers.types import Usage
from quota.ledger import Ask, QuotaStore, Spend
from quota.memory_store import MemoryStore
from tests.fakes import Fail, ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs
from tests.servers import FAST_PACING, NO_GRACE, ThreadServer, thread_server
from tests.tenant_keys import (
    ACME_KEY,
    ADMIN_KEY,
    ALICE_KEY,
    GLOBEX_KEY,
    bearer,
    config_env,
    tenants_toml,
)
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import AWS_TEST_ENV, VENDORS, Vendor

BODY = {"message": "hi", "max_tokens": 100}
# What BODY reserves: its UTF-8 bytes + 16 framing tokens per message, plus max_tokens.
WORST_CASE = 2 + 16 + 100
LATE_EVENING = 1_796_082_000.0  # 2026-11-30 23:40:00 UTC


class Clock:
    def __init__(self, now: float = LATE_EVENING) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limits_settings(tmp_path: Path, acme: dict[str, object] | None = None,
                    extra_toml: str = "", **env: str) -> Settings:
    config = config_env(tmp_path, tenants_toml(acme, None, extra_toml))
    return Settings.from_env({**FAST_PACING, **NO_GRACE, **config, **env})


class SlowSettlingStore(MemoryStore):
    """Settles after a pause, as a store across a network does."""

    async def finish(self, ask: Ask, spent: Spend) -> None:
        await anyio.sleep(0.2)
        await super().finish(ask, spent)


@contextmanager
def serving(settings: Settings, provider: ScriptedProvider | None = None,
            clock: Clock | None = None, store: QuotaStore | None = None,
            ) -> Iterator[ThreadServer]:
    app = create_app(settings, provider, store, clock=clock or Clock())
    with thread_server(app) as live:
        yield live


def chat(live: ThreadServer, key: str = ACME_KEY, path: str = "/chat",
         body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(live.url + path, json=body or BODY, headers=bearer(key), timeout=10)


def usage(live: ThreadServer, key: str = ACME_KEY) -> dict[str, Any]:
    response = httpx.get(live.url + "/usage", headers=bearer(key))
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def assert_refused(response: httpx.Response, code: str, limit: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["limit"]) == (code, limit)
    assert error["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after == error["retry_after_s"] >= 1
    return retry_after


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
def test_the_tenant_rpm_answers_429_with_retry_after_before_any_provider_call(
        tmp_path: Path, path: str) -> None:
    provider = ScriptedProvider(words("fine thanks"))
    with serving(limits_settings(tmp_path, RPM_PER_TENANT="2"), provider) as live:
        assert [chat(live, path=path).status_code for _ in range(2)] == [200, 200]
        retry_after = assert_refused(chat(live, path=path), "rate_limited", "tenant_rpm")
        assert chat(live, ALICE_KEY, path).status_code == 429  # alice is part of acme
        assert chat(live, GLOBEX_KEY, path).status_code == 200  # another tenant is not
    assert 55 <= retry_after <= 60
    assert provider.started == 3


def test_a_user_limit_holds_one_user_of_a_tenant(tmp_path: Path) -> None:
    with serving(limits_settings(tmp_path, {"user_rpm": 1})) as live:
        assert chat(live, ALICE_KEY).status_code == 200
        assert_refused(chat(live, ALICE_KEY), "rate_limited", "user_rpm")
        assert chat(live, ACME_KEY).status_code == 200


async def test_concurrent_streams_are_limited_per_tenant(tmp_path: Path) -> None:
    provider = ScriptedProvider([Sleep(0.3), *words("slow answer")])
    settings = limits_settings(tmp_path, {"max_streams": 2})
    with serving(settings, provider) as live:
        async with httpx.AsyncClient(timeout=10, headers=bearer(ACME_KEY)) as client:
            url = live.url + "/chat/stream"
            # Response headers mean both were admitted; their answers are still coming.
            async with client.stream("POST", url, json=BODY) as first, \
                    client.stream("POST", url, json=BODY) as second:
                third = await client.post(url, json=BODY)
                other = await client.post(url, json=BODY, headers=bearer(GLOBEX_KEY))
                answers = [await first.aread(), await second.aread()]
            after = await client.post(url, json=BODY)
    assert_refused(third, "too_many_streams", "streams")
    assert all(b"event: done" in answer for answer in answers)
    assert other.status_code == 200 and after.status_code == 200


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
def test_an_answer_is_settled_before_the_client_sees_its_end(tmp_path: Path, path: str) -> None:
    provider = ScriptedProvider([*words("ok"), Usage(3, 1)])
    store = SlowSettlingStore(lease_s=300, retention_days=35)
    with serving(limits_settings(tmp_path, {"max_streams": 1}), provider, store=store) as live, \
            httpx.Client(timeout=10, headers=bearer(ACME_KEY)) as client:
        for done in range(1, 4):  # back to back: the one stream slot is free each time
            assert client.post(live.url + path, json=BODY).status_code == 200
            today = client.get(live.url + "/usage").json()["today"]
            assert (today["requests"], today["tokens"], today["reserved_tokens"]) == (
                done, 4 * done, 0)


async def test_concurrent_requests_against_a_budget_admit_exactly_what_it_holds(
        tmp_path: Path) -> None:
    provider = ScriptedProvider([Sleep(0.3), *words("ok"), Usage(3, 1)])
    settings = limits_settings(tmp_path, {"daily_budget_tokens": 3 * WORST_CASE + 50})
    with serving(settings, provider) as live:
        async with httpx.AsyncClient(timeout=10, headers=bearer(ACME_KEY)) as client:
            responses = await asyncio.gather(
                *(client.post(live.url + path, json=BODY)
                  for path in ["/chat", "/chat/stream"] * 5))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 3 + [429] * 7
        for refused in (r for r in responses if r.status_code == 429):
            assert assert_refused(refused, "budget_exceeded", "token_budget") == 5
        today = usage(live)["today"]
    assert provider.started == 3
    assert (today["requests"], today["tokens"], today["reserved_tokens"]) == (3, 12, 0)


def test_a_spent_budget_refuses_until_midnight_utc_then_renews(tmp_path: Path) -> None:
    clock = Clock()
    provider = ScriptedProvider([*words("ok"), Usage(100, 40)])
    with serving(limits_settings(tmp_path, {"daily_budget_tokens": 300}), provider,
                 clock) as live:
        assert [chat(live).status_code for _ in range(2)] == [200, 200]  # 140 each: spent 280
        for path in ("/chat", "/chat/stream"):
            retry_after = assert_refused(chat(live, path=path), "budget_exceeded",
                                         "token_budget")
            assert retry_after == 20 * 60  # 23:40 -> 00:00 UTC
        assert chat(live, GLOBEX_KEY).status_code == 200  # acme's budget is acme's
        clock.now += 20 * 60 + 1
        assert chat(live).status_code == 200
        report = usage(live)
    assert report["day"] == "20261201"
    assert [(d["day"], d["tokens"]) for d in report["days"][-2:]] == [
        ("20261130", 280), ("20261201", 140)]
    assert report["budget"]["tokens_left"] == 160


def test_a_request_bigger_than_what_is_left_is_told_to_ask_for_less(tmp_path: Path) -> None:
    with serving(limits_settings(tmp_path, {"daily_budget_tokens": 100})) as live:
        refused = chat(live)
        smaller = chat(live, body={"message": "hi", "max_tokens": 50})
    assert_refused(refused, "budget_exceeded", "token_budget")
    assert "smaller max_tokens" in refused.json()["error"]["message"]
    assert smaller.status_code == 200


def test_a_usd_budget_uses_the_price_table_and_logs_cost(tmp_path: Path) -> None:
    prices = '[prices."demo/hello-1"]\ninput = 1000.0\noutput = 2000.0\n'
    provider = ScriptedProvider([*words("ok"), Usage(100, 50)], name="demo/hello-1")
    # Each answer costs 100 * 0.001 + 50 * 0.002 = 0.2 USD; its worst case is 0.218.
    settings = limits_settings(tmp_path, {"daily_budget_usd": 0.5}, prices)
    with captured_logs() as logs, serving(settings, provider) as live:
        assert [chat(live).status_code for _ in range(2)] == [200, 200]
        assert_refused(chat(live), "budget_exceeded", "usd_budget")
        report = usage(live)
    assert [r["cost_usd"] for r in logs.records("request_end")] == [0.2, 0.2]
    assert report["today"]["cost_usd"] == pytest.approx(0.4)
    assert report["budget"]["usd_left"] == pytest.approx(0.1)


def open_and_read(live: ThreadServer, wanted: bytes, times: int = 3) -> None:
    """Start a stream as acme, read until `wanted` arrived `times` times, then hang up."""
    address = urlparse(live.url)
    body = orjson.dumps(BODY)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nAuthorization: Bearer %b\r\nContent-Length: %d\r\n\r\n%b"
                     % (ACME_KEY.encode(), len(body), body))
        seen = b""
        while seen.count(wanted) < times:
            seen += sock.recv(4096)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_a_cancelled_stream_settles_what_it_used_and_frees_its_slot(tmp_path: Path) -> None:
    # Sentence ends, so the output guard releases each word as the next one arrives.
    provider = ScriptedProvider(words("One. Two. Three. Four. Five. Six. Seven. Eight.", 0.05))
    settings = limits_settings(tmp_path, {"max_streams": 1, "daily_budget_tokens": 10_000})
    with serving(settings, provider) as live:
        open_and_read(live, b"event: token")
        wait_until(lambda: provider.closed_early == 1)
        wait_until(lambda: usage(live)["today"]["requests"] == 1)
        today = usage(live)["today"]
        assert chat(live).status_code == 200  # the slot is free again
    assert today["reserved_tokens"] == 0
    # No usage report from a cut stream: the input estimate plus the tokens streamed.
    assert today["input_tokens"] == 1 and 3 <= today["output_tokens"] < 8


def test_a_client_leaving_before_the_first_token_is_charged_its_prompt(tmp_path: Path) -> None:
    provider = ScriptedProvider([Sleep(5), *words("never relayed")])
    with serving(limits_settings(tmp_path), provider) as live:
        open_and_read(live, b"retry: ", times=1)
        wait_until(lambda: provider.closed_early == 1)
        wait_until(lambda: usage(live)["today"]["requests"] == 1)
        today = usage(live)["today"]
    # The vendor has read the prompt by then, so the budget counts it.
    assert (today["input_tokens"], today["output_tokens"], today["reserved_tokens"]) == (1, 0, 0)


@pytest.mark.parametrize(("script", "spent"), [
    ([Fail(ProviderUnavailable("down"))], 0),  # failed before answering: nothing generated
    ([*words("half an"), Fail(ProviderUnavailable("died"))], 1 + 2),
])
def test_a_failed_request_settles_what_it_used(tmp_path: Path, script: list[Any],
                                                spent: int) -> None:
    provider = ScriptedProvider(script)
    settings = limits_settings(tmp_path, MAX_ATTEMPTS="1")
    with serving(settings, provider) as live:
        streamed = chat(live, path="/chat/stream")
        report = usage(live)
    assert streamed.status_code == 200 and "event: error" in streamed.text
    assert report["today"]["tokens"] == spent
    assert report["today"]["reserved_tokens"] == 0 and report["today"]["requests"] == 1


def max_tokens_sent(vendor: Vendor, body: dict[str, Any]) -> int:
    if vendor.provider == "bedrock":
        return int(body["inferenceConfig"]["maxTokens"])
    return int(body.get("max_tokens") or body["max_completion_tokens"])


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_max_tokens_is_clamped_before_it_reaches_the_vendor(
        tmp_path: Path, vendor: Vendor, upstream_pool: UpstreamPool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    upstream = upstream_pool.get(vendor)
    settings = Settings.from_env({
        **config_env(tmp_path, tenants_toml({"max_output_tokens": 7})),
        **vendor.env(upstream), "MAX_OUTPUT_TOKENS": "50"})
    with serving(settings) as live:
        for key, asked in [(ACME_KEY, 500), (ACME_KEY, 3), (GLOBEX_KEY, 500), (GLOBEX_KEY, None)]:
            body: dict[str, Any] = {"message": "hi"}
            if asked is not None:
                body["max_tokens"] = asked
            assert chat(live, key, body=body).status_code == 200
    sent = [max_tokens_sent(vendor, received.json) for received in upstream.requests
            if received.json is not None]  # not the readiness probes
    assert sent == [7, 3, 50, 50]


def test_usage_is_readable_by_its_own_tenant_and_an_admin_only(tmp_path: Path) -> None:
    provider = ScriptedProvider([*words("ok"), Usage(10, 5)])
    with serving(limits_settings(tmp_path), provider) as live:
        chat(live, GLOBEX_KEY)
        own = usage(live, GLOBEX_KEY)
        acme = usage(live, ACME_KEY)
        as_admin = httpx.get(live.url + "/admin/usage/globex", headers=bearer(ADMIN_KEY))
        as_acme = httpx.get(live.url + "/admin/usage/globex", headers=bearer(ACME_KEY))
        unknown = httpx.get(live.url + "/admin/usage/initech", headers=bearer(ADMIN_KEY))
        nobody = httpx.get(live.url + "/usage")
        bad_days = httpx.get(live.url + "/usage?days=0", headers=bearer(ACME_KEY))
    assert own["tenant"] == "globex" and own["today"]["tokens"] == 15
    assert acme["tenant"] == "acme" and acme["today"]["tokens"] == 0
    assert as_admin.status_code == 200 and as_admin.json()["today"] == own["today"]
    assert as_acme.status_code == 401 and as_acme.json()["error"]["code"] == "unauthorized"
    assert unknown.status_code == 404 and nobody.status_code == 401
    assert bad_days.status_code == 422


def test_the_read_out_projects_the_monthly_cost_from_recorded_usage(tmp_path: Path) -> None:
    clock = Clock(LATE_EVENING - 23 * 3600 - 40 * 60)  # 2026-11-30 00:00 UTC
    prices = '[prices."demo/hello-1"]\ninput = 0.15\noutput = 0.6\n'
    provider = ScriptedProvider([*words("ok"), Usage(1000, 500)], name="demo/hello-1")
    with serving(limits_settings(tmp_path, extra_toml=prices), provider, clock) as live:
        for _ in range(4):  # 4 requests on the 30th
            chat(live)
        clock.now += 86_400 + 6 * 3600  # 06:00 on the 1st: a quarter of the day
        chat(live)
        report = usage(live)
    projection = report["projection"]
    assert projection["basis"] == "1 recorded day(s)"
    assert projection["avg_tokens_per_request"] == 1500
    assert projection["requests_per_day"] == 4
    # 1500 tokens x 4 requests/day x 30 days x (0.00045 USD / 1500 tokens) per 1M
    assert projection["monthly_usd"] == pytest.approx(4 * 30 * 0.00045, abs=0.01)
    assert projection["monthly_usd_with_headroom"] == pytest.approx(
        3 * projection["monthly_usd"], abs=0.011)
    assert math.isclose(report["days"][-2]["cost_usd"], 4 * 0.00045)
