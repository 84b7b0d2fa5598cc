"""Provider quota headroom end to end: the vendors' rate-limit headers, read from the
wire-exact OpenAI and Anthropic fakes as they count down, shown as gauges, and (when turned on)
moving new requests to the fallback before the primary's vendor answers 429."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.app.test_fallback import FALLBACK, PRIMARY, chain_settings
from tests.logcapture import captured_logs
from tests.servers import ThreadServer, app_server
from tests.upstreams.common import Quota, Script, Upstream

BODY = {"message": "Say hello."}


def gauge(client: httpx.Client, live: ThreadServer, name: str, route: str,
          kind: str) -> float | None:
    scraped = client.get(live.url + "/metrics").text
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if (sample.name == f"hello_ship_provider_quota_{name}"
                    and sample.labels == {"route": route, "kind": kind}):
                return float(sample.value)
    return None


def answered_by(client: httpx.Client, live: ThreadServer) -> str:
    response = client.post(live.url + "/chat", json=BODY)
    assert response.status_code == 200, response.text
    return str(response.json()["model_route"])


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_the_gauges_follow_the_vendors_headers_as_they_count_down(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client, vendor: str) -> None:
    openai, anthropic = upstreams
    if vendor == "openai":
        upstream, settings, route = openai, chain_settings(openai, None), PRIMARY
    else:
        upstream, route = anthropic, FALLBACK
        settings = chain_settings(openai, anthropic, DISABLED_ROUTES=PRIMARY)
    upstream.quota = Quota(requests_limit=50, requests_remaining=50, tokens_limit=4000,
                           tokens_remaining=4000, tokens_per_request=300, reset_s=30)
    with app_server(settings) as live:
        seen = []
        for _ in range(3):
            assert answered_by(client, live) == route
            seen.append((gauge(client, live, "remaining", route, "requests"),
                         gauge(client, live, "remaining", route, "tokens")))
        assert gauge(client, live, "limit", route, "requests") == 50
        assert gauge(client, live, "limit", route, "tokens") == 4000
        reset = gauge(client, live, "reset_timestamp_seconds", route, "tokens")
        # Anthropic also reports input and output tokens apart; OpenAI does not.
        input_tokens = gauge(client, live, "remaining", route, "input_tokens")
    assert seen == [(49, 3700), (48, 3400), (47, 3100)]
    assert reset is not None and 20 < reset - time.time() <= 31
    assert input_tokens == (3100 if vendor == "anthropic" else None)


def test_a_primary_near_its_limit_is_passed_over_until_its_window_resets(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    # The first request leaves 2 % of the primary's requests: 2 of 100, for 1.5 seconds.
    primary.quota = Quota(requests_limit=100, requests_remaining=3, tokens_per_request=0,
                          reset_s=1.5)
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.95")
    with captured_logs() as logs, app_server(settings) as live:
        first = answered_by(client, live)
        second = answered_by(client, live)
        time.sleep(1.6)
        third = answered_by(client, live)
    assert (first, second, third) == (PRIMARY, FALLBACK, PRIMARY)
    (skipped,) = logs.records("route_skipped")
    assert (skipped["model_route"], skipped["reason"]) == (PRIMARY, "quota_headroom")
    (used,) = logs.records("fallback_used")
    assert (used["from_route"], used["to_route"]) == (PRIMARY, FALLBACK)
    assert len([r for r in primary.requests if r.path.endswith("/completions")]) == 2
    assert not logs.records("route_attempt_failed")  # no 429 ever reached the service


def test_without_headroom_fallback_nothing_changes(upstreams: tuple[Upstream, Upstream],
                                                   client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=3, reset_s=30)
    with captured_logs() as logs, app_server(chain_settings(primary, fallback)) as live:
        routes = [answered_by(client, live) for _ in range(3)]
    assert routes == [PRIMARY] * 3 and not logs.records("route_skipped")


def test_a_primary_near_its_limit_is_still_asked_when_the_roomier_route_fails(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=4, tokens_per_request=0,
                          reset_s=30)
    fallback.script = Script(status=529)  # Anthropic overloaded, every time
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.95", MAX_ATTEMPTS="1")
    with captured_logs() as logs, app_server(settings) as live:
        routes = [answered_by(client, live) for _ in range(2)]
    assert routes == [PRIMARY, PRIMARY]  # the second after the fallback failed: not a 503
    assert [r["reason"] for r in logs.records("route_skipped")] == ["quota_headroom"]


def test_when_every_route_is_near_its_limit_the_chain_keeps_its_order(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=4, reset_s=30)
    fallback.quota = Quota(requests_limit=100, requests_remaining=3, reset_s=30)
    primary.queue = [Script(status=503)]  # so that the fallback answers, and reports, first
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.95", MAX_ATTEMPTS="1")
    with captured_logs() as logs, app_server(settings) as live:
        routes = [answered_by(client, live) for _ in range(2)]
    # 97 % used on the primary, 98 % on the fallback: no route has more room, so no skipping.
    assert routes == [FALLBACK, PRIMARY] and not logs.records("route_skipped")


def test_a_primary_near_its_limit_still_answers_when_no_other_route_can(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=2, reset_s=30)
    settings = chain_settings(primary, None, HEADROOM_FALLBACK_AT="0.95")
    with app_server(settings) as live:
        routes = [answered_by(client, live) for _ in range(2)]
    assert routes == [PRIMARY] * 2


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "1",
     "x-ratelimit-reset-requests": "6m0s"},
    {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "-1",
     "x-ratelimit-reset-requests": "6m0s"},
    {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "1",
     "x-ratelimit-reset-requests": "soon"},
    {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0",
     "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-limit-requests": "²", "x-ratelimit-remaining-requests": "1",
     "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-limit-tokens": str(2**64), "x-ratelimit-remaining-tokens": "1",
     "x-ratelimit-reset-tokens": "1" * 400 + "s"},
    {},
])
def test_malformed_or_missing_headers_change_nothing(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client,
        headers: dict[str, str]) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(raw=headers)
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.5")
    with captured_logs() as logs, app_server(settings) as live:
        routes = [answered_by(client, live) for _ in range(2)]
    assert routes == [PRIMARY] * 2 and not logs.records("route_skipped")


def test_with_redis_every_replica_passes_over_a_route_one_of_them_saw_near_its_limit(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client,
        redis_env: dict[str, str]) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=3, tokens_per_request=0,
                          reset_s=30)
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.95", **redis_env)
    # What an older version, or damage, left in Redis is replaced, not a reason to stop.
    poisoned = redis.Redis.from_url(redis_env["REDIS_URL"])
    poisoned.hset(f"{redis_env['REDIS_KEY_PREFIX']}:headroom:{PRIMARY}",
                  mapping={"requests": "not json", "tokens": '{"seen_at": "soon"}'})
    poisoned.close()
    with app_server(settings) as first, app_server(settings) as second:
        assert answered_by(client, first) == PRIMARY  # 2 % left, seen by this replica only
        time.sleep(2.5)  # one round for the first to write what it saw, one for the other
        assert answered_by(client, second) == FALLBACK
    assert len([r for r in primary.requests if r.path.endswith("/completions")]) == 1


def test_with_redis_down_requests_still_go_where_this_replica_knows_best(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.quota = Quota(requests_limit=100, requests_remaining=3, tokens_per_request=0,
                          reset_s=30)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    settings = chain_settings(primary, fallback, HEADROOM_FALLBACK_AT="0.95", REDIS_URL=url,
                              LIMITS_ON_REDIS_ERROR="open", STREAM_TOKEN_KEY="k" * 32)
    with captured_logs() as logs, app_server(settings) as live:
        routes = [answered_by(client, live) for _ in range(2)]
        time.sleep(1.2)
    assert routes == [PRIMARY, FALLBACK]
    assert len(logs.records("headroom_sync_failed")) == 1  # once, not every second
