"""The service in front of each vendor: configured the way a user would, talking real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from config.settings import Settings
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, app_server
from tests.sse import parse_sse
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import BEDROCK, OPENAI, VENDORS, Vendor

BODY = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Say hello."}]}




def settings_for(vendor: Vendor, upstream: Upstream, **extra: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **vendor.env(upstream), **extra})


def route_of(vendor: Vendor) -> str:
    return f"{vendor.provider}/{vendor.model}"


def test_streamed_and_collected_answers_carry_the_vendors_text_and_usage(
        vendor: Vendor, upstream: Upstream) -> None:
    with app_server(settings_for(vendor, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        streamed = client.post(live.url + "/chat/stream", json=BODY)
        collected = client.post(live.url + "/chat", json=BODY)
    items = [item for item in parse_sse(streamed.text) if item.is_event]
    # the output guard lets each word go once the next one starts
    assert [item.event for item in items] == ["meta"] + ["token"] * (len(items) - 2) + ["done"]
    assert len(items) > 3
    assert items[0].data["model_route"] == route_of(vendor)
    assert "".join(item.data["token"] for item in items[1:-1]) == "Hello, world!"
    assert items[-1].data["usage"] == {"input_tokens": 17, "output_tokens": 9}
    assert collected.status_code == 200
    answer = collected.json()
    assert answer["answer"] == "Hello, world!"
    assert answer["usage"] == {"input_tokens": 17, "output_tokens": 9}
    assert answer["model_route"] == route_of(vendor)
    assert upstream.outcomes == ["completed", "completed"]


def test_a_vendor_failing_halfway_ends_the_stream_with_an_error_frame(
        vendor: Vendor, upstream: Upstream) -> None:
    upstream.script = Script(drop_after=2)
    with app_server(settings_for(vendor, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        response = client.post(live.url + "/chat/stream", json=BODY)
    items = [item for item in parse_sse(response.text) if item.is_event]
    assert [item.event for item in items] == ["meta", "token", "error"]
    assert items[1].data["token"] == "Hello,"
    error = items[-1].data
    assert error["code"] == "stream_interrupted" and error["tokens_emitted"] == 1
    assert error["retryable"] is True and error["incident_id"].startswith("inc_")


def test_a_vendor_rate_limit_passes_its_retry_after_on(vendor: Vendor,
                                                         upstream: Upstream) -> None:
    upstream.script = Script(status=429, retry_after="7")
    with app_server(settings_for(vendor, upstream, MAX_ATTEMPTS="1")) as live, \
            httpx.Client(timeout=10) as client:
        response = client.post(live.url + "/chat", json=BODY)
    assert response.status_code == 503
    # Bedrock sends no Retry-After of its own; the service then suggests a second.
    assert response.headers["retry-after"] == ("1" if vendor.provider == "bedrock" else "7")
    assert response.json()["error"]["code"] == "provider_unavailable"


def test_a_client_that_leaves_closes_the_vendor_connection(vendor: Vendor,
                                                           upstream: Upstream) -> None:
    upstream.script = Script(tokens=tuple(f" t{n}" for n in range(500)), token_delay_s=0.01)
    with captured_logs() as logs, app_server(settings_for(vendor, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        with client.stream("POST", live.url + "/chat/stream", json=BODY) as response:
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    break
        # The 5 s answer is cut at once: the fake vendor sees its client go.
        assert upstream.wait_for_outcomes(timeout=3) == ["client_closed"]
    (end,) = logs.records("request_end")
    assert end["status"] == "client_disconnected"
    assert end["model_route"] == route_of(vendor)


def test_a_rejected_key_is_never_repeated_to_the_client_or_the_logs(
        vendor: Vendor, upstream: Upstream) -> None:
    settings = settings_for(vendor, upstream)
    configured = upstream.api_key
    upstream.api_key = "a-different-key"  # the vendor now refuses ours, quoting it back
    with captured_logs() as logs, app_server(settings) as live, \
            httpx.Client(timeout=10) as client:
        collected = client.post(live.url + "/chat", json=BODY)
        streamed = client.post(live.url + "/chat/stream", json=BODY)
        ready = client.get(live.url + "/ready")
    # A refused key is an outage of the route, not a fault in the user's request.
    assert collected.status_code == 503
    assert collected.json()["error"]["code"] == "provider_unavailable"
    assert parse_sse(streamed.text)[-1].data["code"] == "provider_unavailable"
    assert configured in str(upstream.requests[0].headers)  # it was sent, and echoed back
    for text in (collected.text, streamed.text, ready.text, *logs.lines):
        assert configured[-8:] not in text
    # One attempt each (a refused key is not retried), logged with the vendor's status.
    attempts = logs.records("route_attempt_failed")
    assert [a["status_code"] for a in attempts] == [vendor.auth_status] * 2
    assert {a["retryable"] for a in attempts} == {False}


def test_ready_reports_each_route_from_a_cached_check(vendor: Vendor,
                                                      upstream: Upstream) -> None:
    settings = settings_for(vendor, upstream, READY_CHECK_S="600")
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        answers = [client.get(live.url + "/ready") for _ in range(5)]
    assert {answer.status_code for answer in answers} == {200}
    (route,) = answers[-1].json()["routes"]
    assert route["route"] == route_of(vendor)
    assert route["usable"] is True and route["credentials"] == "present"
    assert route["reachable"] is True
    # Five probes of /ready, one check of the vendor, and never a completion.
    checks = [r for r in upstream.requests if r.path.endswith("/models")]
    assert len(checks) <= 1 and not [r for r in upstream.requests if r not in checks]


@pytest.mark.parametrize("vendor", [v for v in VENDORS if v.env_prefix], indirect=True,
                         ids=lambda vendor: vendor.name)
def test_ready_is_503_naming_the_missing_key(vendor: Vendor, upstream: Upstream) -> None:
    settings = settings_for(vendor, upstream, **{f"{vendor.env_prefix}_API_KEY": ""})
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        ready = client.get(live.url + "/ready")
        chat = client.post(live.url + "/chat", json=BODY)
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [
        f"{route_of(vendor)}: no API key: set {vendor.env_prefix}_API_KEY"]
    assert ready.json()["routes"][0]["credentials"] == "missing"
    assert chat.status_code == 503 and upstream.requests == []


@pytest.mark.parametrize("vendor", [v for v in VENDORS if v.env_prefix], indirect=True,
                         ids=lambda vendor: vendor.name)
def test_ready_is_503_while_the_vendor_answers_5xx(vendor: Vendor, upstream: Upstream) -> None:
    upstream.script = Script(status=500)
    with app_server(settings_for(vendor, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        ready = client.get(live.url + "/ready")
    assert ready.status_code == 503
    (route,) = ready.json()["routes"]
    assert route["reachable"] is False and "HTTP 500" in route["problem"]


def test_a_mistyped_aws_profile_is_a_route_problem_not_a_crash(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    upstream = upstream_pool.get(BEDROCK)
    with app_server(settings_for(BEDROCK, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        ready = client.get(live.url + "/ready")
        chat = client.post(live.url + "/chat", json=BODY)
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [
        f"{route_of(BEDROCK)}: bedrock: AWS configuration error (ProfileNotFound)"]
    assert chat.status_code == 503 and upstream.requests == []


def test_ready_answers_at_once_even_while_a_check_hangs(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(hang_s=30)  # the model list never comes
    started = time.monotonic()
    with app_server(settings_for(OPENAI, upstream)) as live, \
            httpx.Client(timeout=10) as client:
        serving_after = time.monotonic() - started
        timings = []
        for _ in range(3):
            sent = time.monotonic()
            ready = client.get(live.url + "/ready")
            timings.append(time.monotonic() - sent)
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [f"{route_of(OPENAI)}: not checked yet"]
    # Start-up waits a bounded while for the first round; /ready itself never waits.
    assert serving_after < 5 and max(timings) < 0.5
