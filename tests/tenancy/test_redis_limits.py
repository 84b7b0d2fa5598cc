"""Limits shared through a real redis-server: two replicas count together, and a Redis outage
follows the configured policy without taking the service down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib.resources import files
from pathlib import Path

import anyio
import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.factory import create_app, quota_store
from config.settings import Settings
from providers.types import Message, Usage
from quota.days import utc_day
from quota.ledger import NOTHING_SPENT
from tenancy.admission import Gatekeeper
from tenancy.identity import Identity
from tests.fakes import ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs
from tests.redis_server import RedisServer, redis_proxy, redis_server
from tests.servers import FAST_PACING, ThreadServer, thread_server
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, bearer, config_env, tenants_toml

BODY = {"message": "hi", "max_tokens": 100}
WORST_CASE = 2 + 16 + 100
ADMIT_SCRIPT = files("quota").joinpath("lua", "admit.lua").read_text()
STORE_ERRORS = "hello_ship_quota_store_errors_total"


def redis_settings(tmp_path: Path, redis_url: str, prefix: str,
                   acme: dict[str, object] | None = None, **env: str) -> Settings:
    return Settings.from_env({**FAST_PACING, **config_env(tmp_path, tenants_toml(acme)),
                              "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
                              "REDIS_TIMEOUT_S": "0.3", **env})


@contextmanager
def replicas(settings: Settings, provider: ScriptedProvider,
             count: int = 2) -> Iterator[list[ThreadServer]]:
    """`count` app instances, as separate replicas would be: each its own Redis client."""
    with ExitStack() as stack:
        yield [stack.enter_context(thread_server(create_app(settings, provider)))
               for _ in range(count)]


def test_two_replicas_share_one_rate_limit(tmp_path: Path, shared_redis: RedisServer) -> None:
    settings = redis_settings(tmp_path, shared_redis.url, uuid.uuid4().hex, {"rpm": 3})
    provider = ScriptedProvider(words("ok"))
    with replicas(settings, provider) as (one, two), httpx.Client(timeout=10) as client:
        statuses = [client.post(live.url + path, json=BODY, headers=bearer(ACME_KEY))
                    .status_code
                    for live, path in [(one, "/chat"), (two, "/chat/stream"), (one, "/chat"),
                                       (two, "/chat"), (one, "/chat/stream")]]
        refused = client.post(two.url + "/chat", json=BODY, headers=bearer(ACME_KEY))
    assert statuses == [200, 200, 200, 429, 429]
    assert refused.json()["error"]["limit"] == "tenant_rpm"
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert provider.started == 3


async def test_two_replicas_share_one_budget_under_concurrent_load(
        tmp_path: Path, shared_redis: RedisServer) -> None:
    settings = redis_settings(tmp_path, shared_redis.url, uuid.uuid4().hex,
                              {"daily_budget_tokens": 4 * WORST_CASE + 10})
    provider = ScriptedProvider([Sleep(0.3), *words("ok"), Usage(5, 2)])
    with replicas(settings, provider) as (one, two):
        async with httpx.AsyncClient(timeout=10, headers=bearer(ACME_KEY)) as client:
            responses = await asyncio.gather(
                *(client.post(live.url + "/chat", json=BODY) for live in [one, two] * 6))
            report = (await client.get(two.url + "/usage")).json()
    assert sorted(r.status_code for r in responses) == [200] * 4 + [429] * 8
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "budget_exceeded"}
    assert provider.started == 4
    assert report["today"]["requests"] == 4 and report["today"]["tokens"] == 4 * 7
    assert report["today"]["reserved_tokens"] == 0


def test_a_tenant_reads_only_its_own_usage_from_redis(tmp_path: Path,
                                                      shared_redis: RedisServer) -> None:
    settings = redis_settings(tmp_path, shared_redis.url, uuid.uuid4().hex)
    provider = ScriptedProvider([*words("ok"), Usage(3, 1)])
    with replicas(settings, provider) as (one, two), httpx.Client(timeout=10) as client:
        client.post(one.url + "/chat", json=BODY, headers=bearer(GLOBEX_KEY))
        acme = client.get(two.url + "/usage", headers=bearer(ACME_KEY)).json()
        globex = client.get(two.url + "/usage", headers=bearer(GLOBEX_KEY)).json()
        admin = client.get(one.url + "/admin/usage/globex", headers=bearer(ADMIN_KEY)).json()
        spoof = client.get(one.url + "/admin/usage/globex", headers=bearer(ACME_KEY))
    assert (acme["tenant"], acme["today"]["tokens"]) == ("acme", 0)
    assert (globex["tenant"], globex["today"]["tokens"]) == ("globex", 4)
    assert admin["today"] == globex["today"]
    assert spoof.status_code == 401


@pytest.mark.parametrize(("policy", "while_down"), [("closed", 503), ("open", 200)])
def test_a_redis_outage_follows_the_policy_and_health_keeps_answering(
        tmp_path: Path, policy: str, while_down: int) -> None:
    provider = ScriptedProvider(words("ok"))
    with redis_server() as redis, captured_logs() as logs:
        settings = redis_settings(tmp_path, redis.url, "outage",
                                  LIMITS_ON_REDIS_ERROR=policy)
        with thread_server(create_app(settings, provider)) as live, \
                httpx.Client(timeout=10, headers=bearer(ACME_KEY)) as client:
            assert client.post(live.url + "/chat", json=BODY).status_code == 200
            redis.kill()
            down = [client.post(live.url + path, json=BODY)
                    for path in ("/chat", "/chat/stream")]
            health = client.get(live.url + "/health")
            metrics = client.get(live.url + "/metrics", headers=bearer(ADMIN_KEY)).text
            with redis_server(redis.port):  # back on the same address
                back = client.post(live.url + "/chat", json=BODY)
    assert [r.status_code for r in down] == [while_down, while_down]
    if policy == "closed":
        for response in down:
            error = response.json()["error"]
            assert error["code"] == "limits_unavailable"
            assert response.headers["retry-after"] == "5"
            assert error["request_id"] == response.headers["x-request-id"]
        assert provider.started == 2
    else:
        assert provider.started == 4
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert back.status_code == 200
    [line] = logs.records("limits_store_unavailable")  # one line per outage, not per request
    assert line["policy"] == policy and line["operation"] == "admit"
    assert (f'hello_ship_quota_store_errors_total{{operation="admit",policy="{policy}"}}'
            in metrics)
    # Each failed admission tried to give back what it might have taken; Redis was down, so
    # that failed too and the lease is left to do it.
    assert (f'hello_ship_quota_store_errors_total{{operation="release",policy="{policy}"}}'
            in metrics)
    assert not logs.records("limits_admission_released")


def counter(client: httpx.Client, live: ThreadServer, name: str, **labels: str) -> float:
    text = client.get(live.url + "/metrics", headers=bearer(ADMIN_KEY)).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name and sample.labels == labels)


def held_in_redis(server: RedisServer, prefix: str, tenant: str = "acme") -> tuple[int, int]:
    """The tenant's stream slots and reserved tokens, read from Redis itself."""
    with redis.Redis(port=server.port) as direct:
        streams = direct.zcard(f"{prefix}:{{{tenant}}}:streams")
        reserved = direct.hget(f"{prefix}:{{{tenant}}}:day:{utc_day(time.time())}",
                               "reserved_tokens")
    return int(streams), int(reserved or 0)


def rate_window(server: RedisServer, prefix: str, tenant: str = "acme") -> int:
    with redis.Redis(port=server.port) as direct:
        return int(direct.zcard(f"{prefix}:{{{tenant}}}:rpm"))


@pytest.mark.parametrize(("policy", "while_lost"), [("closed", 503), ("open", 200)])
def test_an_admission_whose_reply_is_lost_gives_its_slot_and_reservation_back_at_once(
        tmp_path: Path, shared_redis: RedisServer, policy: str, while_lost: int) -> None:
    """Redis runs the admit script, but its reply comes after REDIS_TIMEOUT_S: the request
    follows the policy, and what the script took for it is given back now, not when its
    lease lapses minutes later."""
    prefix = uuid.uuid4().hex
    provider = ScriptedProvider([*words("ok"), Usage(2, 1)])
    with redis_proxy(shared_redis) as proxy, captured_logs() as logs:
        settings = redis_settings(tmp_path, proxy.url, prefix, {"max_streams": 1},
                                  LIMITS_ON_REDIS_ERROR=policy)  # REDIS_TIMEOUT_S is 0.3
        with thread_server(create_app(settings, provider)) as live, \
                httpx.Client(timeout=10, headers=bearer(ACME_KEY)) as client:
            assert client.post(live.url + "/chat", json=BODY).status_code == 200
            before = [counter(client, live, STORE_ERRORS, operation=operation, policy=policy)
                      for operation in ("admit", "admit_released", "release")]
            proxy.hold_script_replies(ADMIT_SCRIPT, 3.0)
            lost = client.post(live.url + "/chat", json=BODY)
            proxy.answer_promptly()
            assert proxy.replies_held == 1
            # The script did run: the lost request is in the rate window with the first one.
            assert rate_window(shared_redis, prefix) == 2
            held = held_in_redis(shared_redis, prefix)
            reserved = client.get(live.url + "/usage").json()["today"]["reserved_tokens"]
            started = time.monotonic()
            following = client.post(live.url + "/chat", json=BODY)
            waited = time.monotonic() - started
            counted = [counter(client, live, STORE_ERRORS, operation=operation, policy=policy)
                       - was for operation, was in zip(("admit", "admit_released", "release"),
                                                       before, strict=True)]
            today = client.get(live.url + "/usage").json()["today"]
    assert lost.status_code == while_lost
    if policy == "closed":
        assert lost.json()["error"]["code"] == "limits_unavailable"
        assert lost.headers["retry-after"] == "5"
    assert held == (0, 0) and reserved == 0  # no slot, no reservation left behind
    assert following.status_code == 200, following.text  # not 429 too_many_streams
    assert waited < 2
    assert provider.started == (3 if policy == "open" else 2)
    assert today["reserved_tokens"] == 0
    assert today["tokens"] == 2 * 3  # the two metered answers; the lost one is charged nothing
    assert counted == [1, 1, 0]  # admit failed, what it took was given back at once
    [line] = logs.records("limits_admission_released")
    assert (line["policy"], line["error"]) == (policy, "TimeoutError")
    [store_line] = logs.records("limits_store_unavailable")
    assert store_line["operation"] == "admit"


def test_an_admission_cancelled_while_redis_answers_gives_its_slot_back(
        tmp_path: Path, shared_redis: RedisServer) -> None:
    """A request cancelled (the server stopping) while its admission is on the wire: the
    script may have run, so the ticket is settled as nothing spent before the cancellation
    goes on."""
    prefix = uuid.uuid4().hex
    acme, prompt = Identity("acme"), [Message("user", "hi")]

    with redis_proxy(shared_redis) as proxy:
        settings = redis_settings(tmp_path, proxy.url, prefix, {"max_streams": 1},
                                  REDIS_TIMEOUT_S="2")
        gate = Gatekeeper(settings.tenancy, settings.prices, [], quota_store(settings),
                          "closed", settings.quota.retention_days)

        async def scenario() -> tuple[bool, tuple[int, int]]:
            try:
                await gate.settle(await gate.admit(acme, prompt, 100), NOTHING_SPENT)
                proxy.hold_script_replies(ADMIT_SCRIPT, 1.5)
                with anyio.move_on_after(0.3) as scope:
                    await gate.admit(acme, prompt, 100)
                proxy.answer_promptly()
                held = held_in_redis(shared_redis, prefix)
                following = await gate.admit(acme, prompt, 100)  # one stream slot: it is free
                await gate.settle(following, NOTHING_SPENT)
                return scope.cancelled_caught, held
            finally:
                await gate.store.aclose()

        cancelled, held = asyncio.run(scenario())
    assert cancelled and proxy.replies_held == 1
    assert rate_window(shared_redis, prefix) == 3  # the cancelled admission did run
    assert held == (0, 0)
