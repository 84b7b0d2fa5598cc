"""Limits shared through a real redis-server: two replicas count together, and a Redis outage
follows the configured policy without taking the service down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from app.factory import create_app
from config.settings import Settings
from providers.types import Usage
from tests.fakes import ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs
from tests.redis_server import RedisServer, redis_server
from tests.servers import FAST_PACING, ThreadServer, thread_server
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, bearer, config_env, tenants_toml

BODY = {"message": "hi", "max_tokens": 100}
WORST_CASE = 2 + 16 + 100


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
