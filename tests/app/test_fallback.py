"""Graceful degradation end to end: the service in front of two real (fake) vendors.

The primary is an OpenAI-protocol server, the fallback an Anthropic one, each speaking its
exact wire format; the service is configured the way an operator would.
"""

from __future__ import annotations

import time

import httpx

from config.settings import Settings
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, ThreadServer, app_server
from tests.sse import parse_sse
from tests.upstreams.common import Script, Upstream
from tests.upstreams.vendors import ANTHROPIC, OPENAI

BODY = {"message": "Say hello."}
PRIMARY = "openai/gpt-4o-mini"
FALLBACK = "anthropic/claude-3-5-haiku-20241022"
DEGRADED = "Our assistant is taking a short break. Your request id helps support."


def chain_settings(primary: Upstream, fallback: Upstream | None, **env: str) -> Settings:
    values = {**FAST_DEMO, **OPENAI.env(primary), "RETRY_BASE_S": "0.05",
              "DEGRADED_MESSAGE": DEGRADED}
    if fallback is not None:
        values.update({k: v for k, v in ANTHROPIC.env(fallback).items()
                       if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")})
        values["FALLBACK_MODEL"] = FALLBACK
    return Settings.from_env({**values, **env})


def stream_events(client: httpx.Client, live: ThreadServer) -> list[dict[str, object]]:
    response = client.post(live.url + "/chat/stream", json=BODY)
    return [item.data for item in parse_sse(response.text) if item.is_event]


def completions(upstream: Upstream) -> list[float]:
    return [r.at for r in upstream.requests if not r.path.endswith("/models")]


def test_a_503_then_success_on_the_same_route(upstreams: tuple[Upstream, Upstream],
                                              client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.queue = [Script(status=503)]
    with captured_logs() as logs, app_server(chain_settings(primary, None)) as live:
        answer = client.post(live.url + "/chat", json=BODY).json()
    assert answer["answer"] == "Hello, world!" and answer["model_route"] == PRIMARY
    assert len(completions(primary)) == 2
    (attempt,) = logs.records("route_attempt_failed")
    assert (attempt["model_route"], attempt["attempt"], attempt["status_code"]) == (
        PRIMARY, 1, 503)
    assert attempt["backoff_s"] is not None
    (end,) = logs.records("request_end")
    assert (end["fallback_tier"], end["attempts"]) == ("primary", 2)


def test_a_429_retry_after_is_honoured(upstreams: tuple[Upstream, Upstream],
                                       client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.queue = [Script(status=429, retry_after="1")]
    with captured_logs() as logs, app_server(chain_settings(primary, None)) as live:
        answer = client.post(live.url + "/chat", json=BODY).json()
    first, second = completions(primary)
    assert answer["answer"] == "Hello, world!" and second - first >= 1.0
    assert logs.records("route_attempt_failed")[0]["backoff_s"] == 1.0


def test_the_primary_down_and_the_fallback_answering(upstreams: tuple[Upstream, Upstream],
                                                     client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(status=503)
    with captured_logs() as logs, app_server(chain_settings(primary, fallback)) as live:
        events = stream_events(client, live)
        collected = client.post(live.url + "/chat", json=BODY).json()
    assert events[0] == {"type": "meta", "request_id": events[0]["request_id"],
                         "model_route": FALLBACK, "stream_id": events[0]["stream_id"]}
    assert events[-1]["type"] == "done" and events[-1]["model_route"] == FALLBACK
    assert collected["model_route"] == FALLBACK and collected["answer"] == "Hello, world!"
    # Three tries for the first request; the second's second failure is the fifth in a row,
    # which opens the breaker (BREAKER_FAILURES=5), so its third try is not made.
    assert len(completions(primary)) == 5 and len(completions(fallback)) == 2
    assert {end["fallback_tier"] for end in logs.records("request_end")} == {"fallback"}


def test_a_primary_hanging_past_the_ttft_timeout_gives_way_to_the_fallback(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(hang_s=30)
    settings = chain_settings(primary, fallback, TTFT_TIMEOUT_S="0.5", MAX_ATTEMPTS="1")
    with app_server(settings) as live:
        started = time.monotonic()
        answer = client.post(live.url + "/chat", json=BODY).json()
        elapsed = time.monotonic() - started
    assert answer["model_route"] == FALLBACK and answer["answer"] == "Hello, world!"
    # The TTFT timeout, then the fallback's own (fast) answer: not the 30 s hang.
    assert 0.5 <= elapsed < 0.5 + 2.0
    # The hung call was hung up on (later lines may be the route check's own hang).
    assert primary.wait_for_outcomes()[0] == "client_closed"


def test_a_stream_dying_after_n_tokens_keeps_them_and_ends_with_one_error(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(drop_after=2)
    with app_server(chain_settings(primary, fallback)) as live:
        events = stream_events(client, live)
    assert [e["type"] for e in events] == ["meta", "token", "error"]
    assert events[1]["token"] == "Hello,"  # both tokens, in one release of the output guard
    assert events[-1]["code"] == "stream_interrupted" and events[-1]["tokens_emitted"] == 1
    # Never spliced: the fallback is not asked to finish another model's answer.
    assert len(completions(primary)) == 1 and completions(fallback) == []


def test_every_route_down_gives_the_degraded_copy_on_both_endpoints(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(status=503)
    fallback.script = Script(status=529)
    with captured_logs() as logs, app_server(chain_settings(primary, fallback)) as live:
        collected = client.post(live.url + "/chat", json=BODY)
        events = stream_events(client, live)
    assert collected.status_code == 503 and "retry-after" in collected.headers
    error = collected.json()["error"]
    assert error["message"] == DEGRADED and error["incident_id"].startswith("inc_")
    assert error["code"] == "provider_unavailable"
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["message"] == DEGRADED and events[0]["incident_id"].startswith("inc_")
    assert events[0]["incident_id"] != error["incident_id"]
    ends = logs.records("request_end")
    assert [e["fallback_tier"] for e in ends] == ["static", "static"]
    assert [e["incident_id"] for e in ends] == [error["incident_id"], events[0]["incident_id"]]


def test_the_breaker_opens_skips_half_opens_and_closes(upstreams: tuple[Upstream, Upstream],
                                                       client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(status=503)
    settings = chain_settings(primary, fallback, MAX_ATTEMPTS="1", BREAKER_FAILURES="2",
                              BREAKER_COOLDOWN_S="1")
    with captured_logs() as logs, app_server(settings) as live:
        routes = [client.post(live.url + "/chat", json=BODY).json()["model_route"]
                  for _ in range(3)]
        assert routes == [FALLBACK] * 3
        assert len(completions(primary)) == 2  # the third request skipped it
        ready = client.get(live.url + "/ready").json()
        assert ready["status"] == "ready"  # the fallback still serves
        assert [r["breaker"] for r in ready["routes"]] == ["open", "closed"]
        time.sleep(1.1)
        primary.script = Script()  # the vendor recovered
        assert client.post(live.url + "/chat", json=BODY).json()["model_route"] == PRIMARY
        ready = client.get(live.url + "/ready").json()
        assert [r["breaker"] for r in ready["routes"]] == ["closed", "closed"]
    assert [r["state"] for r in logs.records("breaker_state")] == [
        "open", "half_open", "closed"]


def test_a_400_from_the_provider_is_not_retried(upstreams: tuple[Upstream, Upstream],
                                                client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.script = Script(status=400)
    with app_server(chain_settings(primary, None)) as live:
        response = client.post(live.url + "/chat", json=BODY)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"
    assert len(completions(primary)) == 1


def test_retries_never_exceed_the_total_deadline(upstreams: tuple[Upstream, Upstream],
                                                 client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.script = Script(status=503)
    settings = chain_settings(primary, None, REQUEST_TIMEOUT_S="1.5", MAX_ATTEMPTS="10",
                              RETRY_BASE_S="0.4", RETRY_MAX_S="0.4")
    with app_server(settings) as live:
        started = time.monotonic()
        response = client.post(live.url + "/chat", json=BODY)
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json()["error"]["message"] == DEGRADED
    assert elapsed < 1.5 + 0.5
    assert 2 <= len(completions(primary)) < 10


def test_a_vendor_going_quiet_mid_answer_is_cut_at_the_idle_timeout(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, _ = upstreams
    primary.script = Script(tokens=("Hello", " there", " slowly"), token_delay_s=5)
    with app_server(chain_settings(primary, None, IDLE_TIMEOUT_S="0.5")) as live:
        started = time.monotonic()
        events = stream_events(client, live)
        elapsed = time.monotonic() - started
    assert [e["type"] for e in events] == ["meta", "token", "error"]
    assert events[1]["token"] == "Hello"
    assert events[-1]["code"] == "stream_interrupted" and elapsed < 3
    assert primary.wait_for_outcomes() == ["client_closed"]


def test_the_fallback_cap_sends_the_overflow_to_the_degraded_copy(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(status=503)
    # The answer cache off: else the fallback's answers to this same question would be served
    # once the cap is reached, before the degraded copy (test_answer_cache shows that tier).
    settings = chain_settings(primary, fallback, MAX_ATTEMPTS="1", FALLBACK_MAX_RPM="2",
                              CACHE_MODE="off")
    with captured_logs() as logs, app_server(settings) as live:
        statuses = [client.post(live.url + "/chat", json=BODY).status_code for _ in range(3)]
    assert statuses == [200, 200, 503]
    assert [r["reason"] for r in logs.records("route_skipped")] == ["fallback_cap"]


def test_a_fallback_drill_is_one_setting(upstreams: tuple[Upstream, Upstream],
                                         client: httpx.Client) -> None:
    primary, fallback = upstreams
    settings = chain_settings(primary, fallback, DISABLED_ROUTES=PRIMARY)
    with app_server(settings) as live:
        answer = client.post(live.url + "/chat", json=BODY).json()
        ready = client.get(live.url + "/ready")
    assert answer["model_route"] == FALLBACK and completions(primary) == []
    assert ready.status_code == 200
    assert ready.json()["routes"][0]["disabled"] is True
