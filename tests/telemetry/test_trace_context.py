"""W3C trace context end to end: what the service accepts, logs, and sends every vendor.

Real HTTP on every side: the service under uvicorn, and fake OpenAI, Anthropic and Bedrock
servers that record the headers each call arrived with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from config.settings import Settings
from telemetry.trace_context import parse_traceparent, request_context
from tests.logcapture import CapturedLogs, captured_logs
from tests.servers import FAST_DEMO, app_server
from tests.upstreams.common import Received, Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, OPENAI, VENDORS, Vendor

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BODY = {"message": "Say hello."}
# What a vendor must receive: version 00, a trace id, a parent span id, the sampled flag.
OUTGOING = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")

MALFORMED = {
    "all-zero trace id": f"00-{'0' * 32}-{PARENT_ID}-01",
    "all-zero parent id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "version ff": f"ff-{TRACE_ID}-{PARENT_ID}-01",
    "garbage": "hello; DROP TABLE traces",
    "too long for version 00": f"{TRACEPARENT}-cafe",
    "uppercase hex": TRACEPARENT.upper(),
    "short trace id": f"00-{TRACE_ID[:-2]}-{PARENT_ID}-01",
}


@pytest.fixture
def vendor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Vendor:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)  # the AWS SDK reads its credential chain itself
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as http:
        yield http


def calls(upstream: Upstream) -> list[Received]:
    """What the service sent for requests: not the readiness checks' model listings."""
    return [r for r in upstream.requests if not r.path.endswith("/models")]


def outgoing(received: Received) -> tuple[str, str, str]:
    match = OUTGOING.fullmatch(received.headers.get("traceparent", ""))
    assert match is not None, received.headers.get("traceparent")
    trace_id, parent_id, flags = match.groups()
    return trace_id, parent_id, flags


def lines_of(logs: CapturedLogs, request_id: str) -> list[dict[str, Any]]:
    return [r for r in logs.records() if r.get("request_id") == request_id]


# -- parsing -------------------------------------------------------------------------------

def test_a_valid_traceparent_is_continued() -> None:
    parent = parse_traceparent([TRACEPARENT])
    assert parent is not None
    assert (parent.trace_id, parent.parent_id, parent.sampled) == (TRACE_ID, PARENT_ID, True)
    unsampled = parse_traceparent([f"00-{TRACE_ID}-{PARENT_ID}-00"])
    assert unsampled is not None and unsampled.sampled is False
    # Only the sampled bit counts; flags this version does not define are dropped.
    other_flags = parse_traceparent([f"00-{TRACE_ID}-{PARENT_ID}-02"])
    assert other_flags is not None and other_flags.sampled is False


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    parent = parse_traceparent([f"01-{TRACE_ID}-{PARENT_ID}-01-what-comes-next"])
    assert parent is not None and parent.trace_id == TRACE_ID
    assert parse_traceparent([f"01-{TRACE_ID}-{PARENT_ID}-01what"]) is None


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_invalid_traceparent_is_not_continued(header: str) -> None:
    assert parse_traceparent([header]) is None


def test_two_traceparent_headers_are_not_continued() -> None:
    assert parse_traceparent([TRACEPARENT, TRACEPARENT]) is None
    assert parse_traceparent([]) is None


def test_every_request_gets_a_trace_and_a_span_of_its_own() -> None:
    continued = request_context(None, [TRACEPARENT], 0.0)
    fresh = request_context(None, [], 0.0)
    again = request_context(None, [], 0.0)
    assert continued.trace_id == TRACE_ID and continued.parent_span_id == PARENT_ID
    assert continued.span_id not in (None, PARENT_ID)
    assert continued.outgoing_traceparent() == f"00-{TRACE_ID}-{continued.span_id}-01"
    assert fresh.parent_span_id is None and fresh.sampled is True
    assert fresh.trace_id != again.trace_id and fresh.span_id != again.span_id
    for ctx in (continued, fresh):
        assert OUTGOING.fullmatch(ctx.outgoing_traceparent() or "")


# -- to every vendor, and on every log line -------------------------------------------------

@pytest.mark.parametrize("vendor", VENDORS, indirect=True, ids=lambda vendor: vendor.name)
def test_every_vendor_receives_the_callers_trace_with_our_span_as_parent(
        vendor: Vendor, upstream_pool: UpstreamPool, client: httpx.Client) -> None:
    upstream = upstream_pool.get(vendor)
    settings = Settings.from_env({**FAST_DEMO, **vendor.env(upstream)})
    with captured_logs() as logs, app_server(settings) as live:
        streamed = client.post(live.url + "/chat/stream", json=BODY, headers={
            "traceparent": TRACEPARENT, "X-Request-ID": "caller-request-one"})
        unsampled = client.post(live.url + "/chat", json=BODY, headers={
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00", "X-Request-ID": "caller-request-2"})
    assert streamed.status_code == unsampled.status_code == 200
    first, second = calls(upstream)
    trace_id, parent_id, flags = outgoing(first)
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert parent_id != PARENT_ID  # the vendor's parent is our span, not our caller's
    # A new span of ours per request; the caller's sampling decision is kept.
    assert outgoing(second)[1] not in (parent_id, PARENT_ID)
    assert outgoing(second)[2] == "00"
    # The caller's other headers never travel on.
    assert "caller-request-one" not in str(first.headers)
    records = lines_of(logs, "caller-request-one")
    assert {"request_start", "request_end", "http_access"} <= {r["event"] for r in records}
    assert {r["trace_id"] for r in records} == {TRACE_ID}


def fallback_settings(primary: Upstream, fallback: Upstream) -> Settings:
    anthropic = {k: v for k, v in ANTHROPIC.env(fallback).items()
                 if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")}
    return Settings.from_env({**FAST_DEMO, **OPENAI.env(primary), **anthropic,
                              "FALLBACK_MODEL": "anthropic/claude-3-5-haiku-20241022",
                              "MAX_ATTEMPTS": "2", "RETRY_BASE_S": "0.01"})


def test_retries_and_the_fallback_carry_the_same_trace(upstream_pool: UpstreamPool,
                                                       client: httpx.Client) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    primary.script = Script(status=503)
    with captured_logs() as logs, app_server(fallback_settings(primary, fallback)) as live:
        answer = client.post(live.url + "/chat", json=BODY,
                             headers={"traceparent": TRACEPARENT, "X-Request-ID": "fb"})
    assert answer.json()["model_route"] == "anthropic/claude-3-5-haiku-20241022"
    sent = [outgoing(r) for r in calls(primary) + calls(fallback)]
    assert len(sent) == 3  # two tries on the primary, then the fallback
    # Every call of the request names the same span of ours as its parent.
    assert len(set(sent)) == 1 and sent[0][0] == TRACE_ID
    records = lines_of(logs, "fb")
    events = [r["event"] for r in records]
    assert events.count("route_attempt_failed") == 2
    assert {"request_start", "request_end", "http_access"} <= set(events)
    assert {r["trace_id"] for r in records} == {TRACE_ID}


def test_without_a_valid_traceparent_the_trace_starts_here(upstream_pool: UpstreamPool,
                                                           client: httpx.Client) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    cases: dict[str, str | None] = {"absent": None, **MALFORMED}
    seen: set[str] = set()
    with captured_logs() as logs, app_server(fallback_settings(primary, fallback)) as live:
        for case, header in cases.items():
            primary.requests.clear()
            primary.queue = [Script(status=503)]  # one failed try: a line from the route chain
            request_id = "fresh-" + case.replace(" ", "-")
            headers = {"X-Request-ID": request_id} | ({"traceparent": header} if header else {})
            answer = client.post(live.url + "/chat", json=BODY, headers=headers)
            assert answer.status_code == 200, case
            failed, retried = calls(primary)
            trace_id, parent_id, flags = outgoing(failed)
            assert trace_id not in (TRACE_ID, "0" * 32) and flags == "01", case
            assert outgoing(retried) == (trace_id, parent_id, flags), case
            records = lines_of(logs, request_id)
            assert "route_attempt_failed" in {r["event"] for r in records}, case
            assert {r["trace_id"] for r in records} == {trace_id}, case
            if header is not None:  # the raw value is never repeated: to vendors or in logs
                assert header not in str(failed.headers) + str(retried.headers), case
                assert not [line for line in logs.lines if header in line], case
            seen.add(trace_id)
    assert len(seen) == len(cases)  # a trace of its own for each request


def test_moderation_calls_carry_the_trace_too(upstream_pool: UpstreamPool,
                                              client: httpx.Client) -> None:
    upstream = upstream_pool.get(OPENAI)
    settings = Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream), "MODERATION": "openai"})
    with app_server(settings) as live:
        answer = client.post(live.url + "/chat", json=BODY, headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 200
    moderation, completion = calls(upstream)
    assert moderation.path.endswith("/moderations")
    assert outgoing(moderation) == outgoing(completion)
    assert outgoing(moderation)[0] == TRACE_ID
