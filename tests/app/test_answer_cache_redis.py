"""The answer cache shared by replicas through a real redis-server: each replica here is its
own service with its own memory, so only Redis can carry an entry from one to the other."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from tests.app.answer_cache_common import (
    ANSWER,
    QUESTION,
    ROUTE,
    Writes,
    answer_of,
    ask,
    chats,
    settings,
)
from tests.redis_server import redis_server
from tests.servers import app_server
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, bearer
from tests.upstreams.common import Upstream


def test_two_replicas_share_exact_and_near_duplicate_entries(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes,
        redis_env: dict[str, str]) -> None:
    config = settings(faq_vendor, CACHE_MODE="first", **redis_env)
    with app_server(config) as one, app_server(config) as two:
        ask(client, one, QUESTION)
        writes(1)
        exact = ask(client, two, QUESTION)
        near = ask(client, two, "what is the refund policy for annual plans please")
    assert (exact[-1]["cached"], exact[-1]["match"]) == (True, "exact")
    assert (near[-1]["cached"], near[-1]["match"]) == (True, "lexical")
    assert answer_of(near) == "".join(ANSWER)
    assert chats(faq_vendor) == 1


def test_a_clear_on_one_replica_empties_the_cache_of_every_replica(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes, redis_env: dict[str, str],
        tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, CACHE_MODE="first", **redis_env)
    with app_server(config) as one, app_server(config) as two:
        ask(client, one, QUESTION, ACME_KEY)
        ask(client, one, QUESTION, GLOBEX_KEY)
        writes(2)
        assert ask(client, two, QUESTION, ACME_KEY)[-1]["cached"] is True  # two indexed it
        cleared = client.delete(one.url + "/admin/cache/acme", headers=bearer(ADMIN_KEY))
        exact = ask(client, two, QUESTION, ACME_KEY)
        writes(3)  # that answer is stored afresh
        near = ask(client, one, "what is the refund policy for annual plans please", ACME_KEY)
        globex = ask(client, two, QUESTION, GLOBEX_KEY)
    assert cleared.json() == {"tenant": "acme", "cleared": 1}
    assert "cached" not in exact[-1]
    assert near[-1]["cached"] is True  # the fresh entry, not the cleared one
    assert globex[-1]["cached"] is True
    assert chats(faq_vendor) == 3


def test_a_new_prompt_version_does_not_serve_the_old_versions_answers(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes,
        redis_env: dict[str, str]) -> None:
    with app_server(settings(faq_vendor, CACHE_MODE="first", PROMPT_VERSION="v1",
                             **redis_env)) as old:
        ask(client, old, QUESTION)
        writes(1)
        assert ask(client, old, QUESTION)[-1]["cached"] is True
    with app_server(settings(faq_vendor, CACHE_MODE="first", PROMPT_VERSION="v2",
                             **redis_env)) as new:
        fresh = ask(client, new, QUESTION)
    with app_server(settings(faq_vendor, CACHE_MODE="first", PROMPT_VERSION="v1",
                             **redis_env)) as back:
        old_again = ask(client, back, QUESTION)
    assert "cached" not in fresh[-1] and fresh[-1]["model_route"] == ROUTE
    assert old_again[-1]["cached"] is True  # v1's entry was not touched by v2
    assert chats(faq_vendor) == 2


def test_with_redis_down_answers_still_come_and_the_failures_are_counted(
        faq_vendor: Upstream, client: httpx.Client) -> None:
    def errors(operation: str) -> float:
        return REGISTRY.get_sample_value("hello_ship_cache_errors_total",
                                         {"operation": operation}) or 0.0

    lookups, stores = errors("lookup"), errors("store")
    with redis_server() as redis:
        config = settings(faq_vendor, CACHE_MODE="first", REDIS_URL=redis.url,
                          LIMITS_ON_REDIS_ERROR="open")
        with app_server(config) as live:
            redis.kill()
            answers = [ask(client, live, QUESTION) for _ in range(2)]
            deadline = time.monotonic() + 5
            while errors("store") < stores + 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    assert all(answer_of(a) == "".join(ANSWER) for a in answers)
    assert all(a[-1]["model_route"] == ROUTE for a in answers)
    assert errors("lookup") >= lookups + 2 and errors("store") >= stores + 2


def test_a_clear_with_redis_down_says_so_and_clears_nothing(
        faq_vendor: Upstream, client: httpx.Client, tmp_path: Path) -> None:
    with redis_server() as redis:
        config = settings(faq_vendor, tmp_path, REDIS_URL=redis.url,
                          LIMITS_ON_REDIS_ERROR="open")
        with app_server(config) as live:
            redis.kill()
            refused = client.delete(live.url + "/admin/cache/acme", headers=bearer(ADMIN_KEY))
            still = ask(client, live, QUESTION, ACME_KEY)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    error = refused.json()["error"]
    assert (error["code"], error["retryable"]) == ("cache_unavailable", True)
    assert refused.headers["X-Request-ID"] == error["request_id"]
    assert answer_of(still) == "".join(ANSWER)
