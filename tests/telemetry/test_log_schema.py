"""The documented log schema (docs/observability.md), held to the lines the service writes.

The schema tables are parsed from that page, so the document and the code cannot drift: each
line checked here must have exactly the fields its event documents, with the documented types,
level and logger. The service runs for real in front of a wire-exact fake OpenAI server (both
routes of the chain are models there, so one upstream plays the whole script in order), and
one failed request's lines, picked out by its request id alone, must tell what happened to it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from config.settings import Settings
from tests.logcapture import CapturedLogs, captured_logs
from tests.servers import FAST_DEMO, FAST_PACING, app_server
from tests.sse import parse_sse
from tests.tenant_keys import ACME_KEY, GLOBEX_KEY, bearer, config_env, tenants_toml
from tests.test_layers import LAYERS
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

ROOT = Path(__file__).resolve().parents[2]
PRIMARY = "openai/gpt-4o-mini"
FALLBACK = "openai/gpt-4.1-mini"
# In the prompt and in the model's answer: neither may reach any log line.
USER_MARKER = "Xylophone-Marmalade-7781"
MODEL_MARKER = "Quorvane"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
LEVELS = ("debug", "info", "warning", "error", "critical")
# The Python type of each JSON type the schema names.
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool, "object": dict,
    "list of str": list, "null": type(None),
}


@dataclass(frozen=True)
class EventDoc:
    levels: frozenset[str]
    loggers: frozenset[str]
    fields: dict[str, str]  # name -> documented type
    optional: frozenset[str]  # "(only ...)": on some lines of the event

    @property
    def required(self) -> set[str]:
        return set(self.fields) - self.optional


@dataclass(frozen=True)
class Schema:
    common: EventDoc
    events: dict[str, EventDoc]
    process_events: frozenset[str]


def _section() -> str:
    text = (ROOT / "docs" / "observability.md").read_text()
    return text.split("## Log schema (version 1)\n", 1)[1].split("\n## ", 1)[0]


def _field_table(block: str) -> tuple[dict[str, str], frozenset[str]]:
    fields: dict[str, str] = {}
    optional: set[str] = set()
    for line in block.splitlines():
        if not line.startswith("| `"):
            continue
        name, kind, meaning = (cell.strip() for cell in line.strip().strip("|").split("|"))
        fields[name.strip("`")] = kind
        if meaning.startswith("(only"):
            optional.add(name.strip("`"))
    return fields, frozenset(optional)


def parse_schema() -> Schema:
    section = _section()
    common_block = section.split("**Common fields**", 1)[1].split("\n### ", 1)[0]
    fields, optional = _field_table(common_block)
    common = EventDoc(frozenset(LEVELS), frozenset(), fields, optional)
    events: dict[str, EventDoc] = {}
    for block in section.split("\n#### ")[1:]:
        heading, _, body = block.partition("\n")
        body = body.split("\n### ", 1)[0]
        paragraph = body.strip().split("\n\n", 1)[0]
        assert paragraph.startswith("Level "), heading
        fields, optional = _field_table(body)
        doc = EventDoc(
            frozenset(re.findall(r"`(debug|info|warning|error|critical)`", paragraph)),
            frozenset(re.findall(r"`(hello_ship\.\w+)`", paragraph)),
            fields, optional)
        for name in re.findall(r"`(\w+)`", heading):
            events[name] = doc
    process_table = section.split("### Events of the process", 1)[1]
    process = {name for row in process_table.splitlines() if row.startswith("| `")
               for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    return Schema(common, events, frozenset(process))


SCHEMA = parse_schema()


def matches(value: Any, documented: str) -> bool:
    for alternative in documented.split(" or "):
        kind = JSON_TYPES[alternative]
        if isinstance(value, bool) and alternative in ("int", "float"):
            continue  # JSON tells true from 1; so does the schema
        if isinstance(value, kind):
            return True
    return False


def assert_documented(line: dict[str, Any]) -> None:
    """The line has exactly the fields its event documents, of the documented types."""
    event = line["event"]
    doc = SCHEMA.events[event]
    assert line["level"] in doc.levels, (event, line["level"])
    assert line["logger"] in doc.loggers, (event, line["logger"])
    common = SCHEMA.common
    assert common.required <= line.keys(), common.required - line.keys()
    for name in line.keys() & common.fields.keys():
        assert matches(line[name], common.fields[name]), (name, line[name])
    own = set(line) - set(common.fields)
    assert own - set(doc.fields) == set(), f"{event}: undocumented {own - set(doc.fields)}"
    assert doc.required - own == set(), f"{event}: missing {doc.required - own}"
    for name in own:
        assert matches(line[name], doc.fields[name]), (event, name, line[name])


def wait_for_line(logs: CapturedLogs, event: str, request_id: str,
                  timeout: float = 5.0) -> dict[str, Any]:
    """A response is complete before its last lines are written: wait for them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in logs.records(event):
            if record.get("request_id") == request_id:
                return record
        time.sleep(0.01)
    raise AssertionError(f"no {event} line for {request_id} within {timeout}s")


def lines_of(logs: CapturedLogs, request_id: str) -> list[dict[str, Any]]:
    """The service's own lines of one request. (The vendor SDKs' HTTP stacks log each call at
    INFO, which `configure_logging` holds back in production but not this capture.)"""
    return [r for r in logs.records() if r.get("request_id") == request_id
            and r["logger"].startswith("hello_ship.")]


def assert_no_text(logs: CapturedLogs) -> None:
    for line in logs.lines:
        assert USER_MARKER not in line and MODEL_MARKER not in line, line


def chain_settings(vendor: Upstream, **env: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **OPENAI.env(vendor), "RETRY_BASE_S": "0.05",
                              **env})


@pytest.fixture
def vendor(upstream_pool: UpstreamPool) -> Upstream:
    return upstream_pool.get(OPENAI)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def test_the_schema_documents_every_event_the_code_logs() -> None:
    logged: set[str] = set()
    call = re.compile(r"\blogger\.(?:debug|info|warning|error|exception|critical|log)\(")
    for package in LAYERS:  # every package of the project
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            for found in call.finditer(source):
                # The first literal that is a whole argument: not one inside a level's
                # expression (`logging.WARNING if reason == "..." else logging.INFO`).
                name = re.search(r'(?:^|,)\s*"([a-z_]+)"\s*[,)]',
                                 source[found.end():found.end() + 200])
                assert name is not None, f"{path.name}: a log call without an event name"
                logged.add(name[1])
    documented = set(SCHEMA.events) | SCHEMA.process_events
    assert logged - documented == set(), "logged but not in the documented log schema"
    assert {"request_start", "request_end", "route_attempt_failed", "route_answering",
            "fallback_used", "client_disconnected", "request_rejected"} <= set(SCHEMA.events)


def test_a_failed_request_can_be_reconstructed_from_its_lines_alone(
        vendor: Upstream, client: httpx.Client) -> None:
    # The primary is refused twice; the fallback starts its answer, then its connection
    # drops mid-answer.
    vendor.queue = [Script(status=503), Script(status=503),
                    Script(tokens=(MODEL_MARKER, " is", " here.", " And", " then"),
                           drop_after=4)]
    request_id = "req_schema_failed_1"
    settings = chain_settings(vendor, MAX_ATTEMPTS="2", FALLBACK_MODEL=FALLBACK)
    with captured_logs() as logs, app_server(settings) as live:
        response = client.post(
            live.url + "/chat/stream",
            json={"message": f"Please tell me about {USER_MARKER} today.", "feature": "faq"},
            headers={"X-Request-ID": request_id, "traceparent": TRACEPARENT})
        wait_for_line(logs, "http_access", request_id)
    frames = [item.data for item in parse_sse(response.text) if item.is_event]
    error = frames[-1]
    tokens_sent = sum(frame["type"] == "token" for frame in frames)
    assert error["type"] == "error" and tokens_sent >= 1
    assert [r.json["model"] for r in vendor.requests if r.path.endswith("/completions")] == [
        "gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini"]

    every_line = [r for r in logs.records() if r.get("request_id") == request_id]
    assert all((line["trace_id"], line["log_schema"]) == (TRACE_ID, 1) for line in every_line)
    lines = lines_of(logs, request_id)
    assert [line["event"] for line in lines] == [
        "request_start", "route_attempt_failed", "route_attempt_failed", "route_answering",
        "fallback_used", "provider_failed", "request_end", "http_access"]
    for line in lines:
        assert (line["request_id"], line["trace_id"], line["log_schema"]) == (
            request_id, TRACE_ID, 1)
        assert_documented(line)
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    start, first, second, answering, fell_back, failed, end, access = lines

    # What was asked: sizes and a hash, never the text.
    assert start["model_route"] == PRIMARY and start["stream"] is True
    assert start["feature"] == "faq" and len(start["input_hash"]) == 16
    # The routes tried, in order, and why each attempt failed.
    assert [(a["model_route"], a["tier"], a["attempt"], a["error_class"], a["status_code"],
             a["retryable"]) for a in (first, second)] == [
        (PRIMARY, "primary", 1, "ProviderUnavailable", 503, True),
        (PRIMARY, "primary", 2, "ProviderUnavailable", 503, True)]
    assert first["backoff_s"] > 0 and second["backoff_s"] is None  # MAX_ATTEMPTS reached
    # Which route answered, and that it was a fallback.
    assert (answering["model_route"], answering["tier"], answering["attempt"],
            answering["failed_attempts"]) == (FALLBACK, "fallback", 1, 2)
    assert (fell_back["from_route"], fell_back["to_route"], fell_back["tier"],
            fell_back["failed_attempts"]) == (PRIMARY, FALLBACK, "fallback", 2)
    # What broke the answer, how far it had got, and what the client was told.
    assert failed["route"] == FALLBACK and failed["tokens_emitted"] == tokens_sent
    assert (end["status"], end["error_code"], end["incident_id"], end["http_status"]) == (
        "error", error["code"], error["incident_id"], 200)
    assert error["code"] == "stream_interrupted"
    assert (end["model_route"], end["fallback_tier"], end["attempts"]) == (
        FALLBACK, "fallback", 1)
    assert end["tokens_emitted"] == error["tokens_emitted"] == tokens_sent
    # Timings: each step's, and the request's.
    assert 0 < end["ttft_ms"] <= end["latency_ms"] <= access["duration_ms"]
    assert first["attempt_ms"] >= 0 and answering["first_event_ms"] >= 0
    assert (access["path"], access["status"]) == ("/chat/stream", 200)
    # Every line of the run carries the schema version; none carries user or model text.
    assert all(record["log_schema"] == 1 for record in logs.records())
    assert_no_text(logs)


def test_the_degraded_copy_is_a_fallback_too(vendor: Upstream, client: httpx.Client) -> None:
    vendor.script = Script(status=503)
    request_id = "req_schema_static_1"
    with captured_logs() as logs, app_server(chain_settings(vendor, MAX_ATTEMPTS="1")) as live:
        response = client.post(live.url + "/chat", json={"message": USER_MARKER},
                               headers={"X-Request-ID": request_id})
        wait_for_line(logs, "http_access", request_id)
    assert response.status_code == 503
    events = {line["event"]: line for line in lines_of(logs, request_id)}
    for line in events.values():
        assert_documented(line)
    static = events["fallback_used"]
    assert (static["from_route"], static["to_route"], static["tier"],
            static["failed_attempts"]) == (PRIMARY, None, "static", 1)
    assert static["incident_id"] == response.json()["error"]["incident_id"]
    assert events["request_end"]["fallback_tier"] == "static"
    assert "route_answering" not in events
    assert_no_text(logs)


def completions(upstream: Upstream) -> int:
    return sum(r.path.endswith("/completions") for r in upstream.requests)


def drop_collected_request(url: str, upstream: Upstream) -> None:
    """Ask `/chat` on a raw socket and hang up once the vendor is answering."""
    address = urlparse(url)
    body = orjson.dumps({"message": USER_MARKER})
    asked_before = completions(upstream)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nX-Request-ID: req_schema_left_chat\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
        deadline = time.monotonic() + 5
        while completions(upstream) == asked_before:
            assert time.monotonic() < deadline, "the vendor was never asked"
            time.sleep(0.01)


def test_a_client_leaving_is_one_line_saying_when(vendor: Upstream,
                                                  client: httpx.Client) -> None:
    # Long enough to outlast the test; the first token late enough that the collected request
    # has gone before any text.
    vendor.script = Script(tokens=(" Tokens", " keep", " coming.") * 200, token_delay_s=0.01,
                           first_token_s=0.5)
    with captured_logs() as logs, app_server(chain_settings(vendor)) as live:
        with client.stream("POST", live.url + "/chat/stream", json={"message": USER_MARKER},
                           headers={"X-Request-ID": "req_schema_left_stream"}) as response:
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    break
        streamed_end = wait_for_line(logs, "request_end", "req_schema_left_stream")
        drop_collected_request(live.url, vendor)
        collected_end = wait_for_line(logs, "request_end", "req_schema_left_chat")

    for request_id in ("req_schema_left_stream", "req_schema_left_chat"):
        for record in lines_of(logs, request_id):
            assert_documented(record)
    streamed = wait_for_line(logs, "client_disconnected", "req_schema_left_stream")
    assert (streamed["endpoint"], streamed["reason"], streamed["model_route"]) == (
        "/chat/stream", "closed", PRIMARY)
    assert streamed["after_first_token"] is True and streamed["tokens_emitted"] >= 1
    assert streamed["elapsed_ms"] <= streamed_end["latency_ms"]
    assert streamed_end["status"] == "client_disconnected"
    assert streamed_end["tokens_emitted"] == streamed["tokens_emitted"]

    collected = wait_for_line(logs, "client_disconnected", "req_schema_left_chat")
    assert (collected["endpoint"], collected["reason"], collected["tokens_emitted"],
            collected["after_first_token"]) == ("/chat", "closed", 0, False)
    assert (collected_end["status"], collected_end["http_status"]) == (
        "client_disconnected", 499)
    assert_no_text(logs)


def test_a_limit_refusal_says_which_limit_whose_and_when_to_retry(tmp_path: Path) -> None:
    config = config_env(tmp_path, tenants_toml({"rpm": 1}, {"daily_budget_tokens": 10}))
    settings = Settings.from_env({**FAST_PACING, **config})
    with captured_logs() as logs, app_server(settings) as live, \
            httpx.Client(timeout=10) as client:
        def chat(key: str, request_id: str) -> httpx.Response:
            return client.post(live.url + "/chat", json={"message": USER_MARKER},
                               headers={**bearer(key), "X-Request-ID": request_id})

        assert chat(ACME_KEY, "req_schema_rpm_ok").status_code == 200
        over_rpm = chat(ACME_KEY, "req_schema_rpm")
        over_budget = chat(GLOBEX_KEY, "req_schema_budget")
        bad = client.post(live.url + "/chat", content=b"{", headers={
            **bearer(ACME_KEY), "Content-Type": "application/json",
            "X-Request-ID": "req_schema_bad"})
        for request_id in ("req_schema_rpm", "req_schema_budget", "req_schema_bad"):
            wait_for_line(logs, "http_access", request_id)

    assert (over_rpm.status_code, over_budget.status_code, bad.status_code) == (429, 429, 400)
    refusals = {request_id: wait_for_line(logs, "request_rejected", request_id)
                for request_id in ("req_schema_rpm", "req_schema_budget", "req_schema_bad")}
    for line in refusals.values():
        assert_documented(line)
    rpm, budget, invalid = refusals.values()
    assert (rpm["status"], rpm["code"], rpm["limit"], rpm["tenant_id"], rpm["user_id"]) == (
        429, "rate_limited", "tenant_rpm", "acme", None)
    assert rpm["retry_after_s"] == int(over_rpm.headers["retry-after"]) >= 1
    assert (budget["code"], budget["limit"], budget["tenant_id"]) == (
        "budget_exceeded", "token_budget", "globex")
    assert budget["retry_after_s"] == int(over_budget.headers["retry-after"])
    # Limit fields are only on limit refusals.
    assert (invalid["status"], invalid["code"]) == (400, "invalid_json")
    assert "limit" not in invalid and "tenant_id" not in invalid
    assert_no_text(logs)
