"""Optional OpenTelemetry spans: one server span per chat request, in the request's own trace.

The spans go to the SDK's in-memory exporter through `tracing.add_span_processor`, or to a
fake OTLP collector over real HTTP; the vendors are the fake servers, recording the
`traceparent` each call carried.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from config.settings import Settings, SettingsError
from telemetry import tracing
from telemetry.spans import TracingSettings
from telemetry.trace_context import request_context
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, ThreadServer, app_server, thread_server
from tests.upstreams.common import Received, Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, OPENAI

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET_TEXT = "my name is Zebulon Quixote"
SPANS_ON = {"OTEL_ENABLED": "true", "OTEL_TRACES_EXPORTER": "none"}


@pytest.fixture(autouse=True)
def spans_off_afterwards() -> Iterator[None]:
    """Spans are process-wide: no test leaves them on for the next."""
    yield
    tracing.configure(TracingSettings())


@contextmanager
def traced_server(settings: Settings) -> Iterator[tuple[ThreadServer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    with app_server(settings) as live:
        tracing.add_span_processor(SimpleSpanProcessor(exporter))
        yield live, exporter


def settings_for(upstream: Upstream, **env: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream), **SPANS_ON, **env})


def completions(upstream: Upstream) -> list[Received]:
    return [r for r in upstream.requests if not r.path.endswith("/models")]


def vendor_parent(received: Received) -> str:
    return received.headers["traceparent"].split("-")[2]


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def test_a_span_per_request_in_the_callers_trace(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    with captured_logs() as logs, traced_server(settings_for(upstream)) as (live, spans), \
            httpx.Client(timeout=10) as client:
        response = client.post(live.url + "/chat/stream", json={"message": SECRET_TEXT},
                               headers={"traceparent": TRACEPARENT, "X-Request-ID": "spanned"})
        assert response.status_code == 200
    (span,) = spans.get_finished_spans()
    assert span.name == "POST /chat/stream" and span.kind == SpanKind.SERVER
    assert span.context is not None and span.parent is not None
    assert hex_id(span.context.trace_id, 32) == TRACE_ID
    assert hex_id(span.parent.span_id, 16) == PARENT_ID and span.parent.is_remote
    # The vendor's parent is this span: its own spans nest under ours.
    (call,) = completions(upstream)
    assert vendor_parent(call) == hex_id(span.context.span_id, 16)
    attributes = dict(span.attributes or {})
    assert attributes == {
        "http.request.method": "POST", "http.route": "/chat/stream",
        "http.response.status_code": 200, "hello_ship.stream": True,
        "hello_ship.request_id": "spanned", "hello_ship.outcome": "ok",
        "hello_ship.model_route": "openai/gpt-4o-mini", "hello_ship.fallback_tier": "primary",
        "hello_ship.attempts": 1, "hello_ship.ttft_ms": attributes["hello_ship.ttft_ms"],
        "hello_ship.tokens_emitted": response.text.count("event: token"),
        "hello_ship.finish_reason": "stop",
        "gen_ai.usage.input_tokens": 17, "gen_ai.usage.output_tokens": 9,
    }
    assert isinstance(attributes["hello_ship.ttft_ms"], float)
    assert attributes["hello_ship.ttft_ms"] > 0
    assert span.status.status_code == StatusCode.UNSET
    assert "Zebulon" not in str(attributes) and upstream.api_key not in str(attributes)
    lines = [r for r in logs.records() if r.get("request_id") == "spanned"]
    assert lines and {r["trace_id"] for r in lines} == {TRACE_ID}


def test_a_request_id_shaped_like_a_key_is_redacted_in_the_span_as_in_the_logs(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    key_like = "sk-proj-" + "AbCdEfGhIjKlMnOpQrStUvWx0123456789abcd"
    with captured_logs() as logs, traced_server(settings_for(upstream)) as (live, spans), \
            httpx.Client(timeout=10) as client:
        assert client.post(live.url + "/chat", json={"message": "hi"},
                           headers={"X-Request-ID": key_like}).status_code == 200
    (span,) = spans.get_finished_spans()
    logged = {r["request_id"] for r in logs.records() if r.get("event") == "request_end"}
    assert logged == {dict(span.attributes or {})["hello_ship.request_id"]}
    assert key_like not in str(dict(span.attributes or {})) and "[redacted:" in logged.pop()


def test_a_request_without_a_trace_gets_a_root_span_with_its_logged_ids(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    with captured_logs() as logs, traced_server(settings_for(upstream)) as (live, spans), \
            httpx.Client(timeout=10) as client:
        client.post(live.url + "/chat", json={"message": "hi"}, headers={"X-Request-ID": "root"})
    (span,) = spans.get_finished_spans()
    assert span.parent is None and span.context is not None
    (end,) = [r for r in logs.records("request_end") if r["request_id"] == "root"]
    assert end["trace_id"] == hex_id(span.context.trace_id, 32)
    (call,) = completions(upstream)
    assert call.headers["traceparent"] == (
        f"00-{end['trace_id']}-{hex_id(span.context.span_id, 16)}-01")


def test_failures_and_refusals_are_spans_too(upstream_pool: UpstreamPool) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    primary.script = Script(status=503)
    settings = settings_for(primary, MAX_ATTEMPTS="1", BREAKER_FAILURES="100")
    with traced_server(settings) as (live, spans), httpx.Client(timeout=10) as client:
        down = client.post(live.url + "/chat", json={"message": "hi"})
        refused = client.post(live.url + "/chat", json={"mesage": "typo"})
    assert (down.status_code, refused.status_code) == (503, 422)
    by_status = {dict(s.attributes or {})["http.response.status_code"]: s
                 for s in spans.get_finished_spans()}
    failed, invalid = by_status[503], by_status[422]
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["hello_ship.error_code"] == "provider_unavailable"
    assert dict(failed.attributes or {})["hello_ship.outcome"] == "error"
    # A caller's mistake is not the server's error.
    assert invalid.status.status_code == StatusCode.UNSET
    assert dict(invalid.attributes or {})["hello_ship.outcome"] == "refused"
    assert dict(invalid.attributes or {})["error.type"] == refused.json()["error"]["code"]
    # And the fallback tier when the fallback answers.
    anthropic = {k: v for k, v in ANTHROPIC.env(fallback).items()
                 if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")}
    settings = settings_for(primary, MAX_ATTEMPTS="1", BREAKER_FAILURES="100", **anthropic,
                            FALLBACK_MODEL="anthropic/claude-3-5-haiku-20241022")
    with traced_server(settings) as (live, spans), httpx.Client(timeout=10) as client:
        assert client.post(live.url + "/chat", json={"message": "hi"}).status_code == 200
    (span,) = spans.get_finished_spans()
    assert dict(span.attributes or {})["hello_ship.fallback_tier"] == "fallback"
    assert span.context is not None
    assert vendor_parent(completions(fallback)[0]) == hex_id(span.context.span_id, 16)


def test_a_sampler_that_drops_the_trace_tells_the_vendors(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK itself
    upstream = upstream_pool.get(OPENAI)
    with traced_server(settings_for(upstream)) as (live, spans), \
            httpx.Client(timeout=10) as client:
        client.post(live.url + "/chat", json={"message": "hi"})
    assert spans.get_finished_spans() == ()
    (call,) = completions(upstream)
    assert call.headers["traceparent"].endswith("-00")  # not recorded here


@contextmanager
def otlp_collector() -> Iterator[tuple[str, list[bytes]]]:
    """A fake OTLP/HTTP collector: keeps each export request's protobuf body."""
    bodies: list[bytes] = []

    async def export(request: Request) -> Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        bodies.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/traces", export, methods=["POST"])])
    with thread_server(app) as live:
        yield live.url, bodies


def exported_spans(bodies: list[bytes]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span the collector received."""
    found = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value
                        for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                found.extend((resource, span) for span in scope_spans.spans)
    return found


def test_spans_reach_an_otlp_collector_named_by_the_standard_variable(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = upstream_pool.get(OPENAI)
    with otlp_collector() as (collector_url, bodies):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
        settings = settings_for(upstream, OTEL_TRACES_EXPORTER="otlp")
        with app_server(settings) as live, httpx.Client(timeout=10) as client:
            client.post(live.url + "/chat", json={"message": "hi"},
                        headers={"traceparent": TRACEPARENT})
        # Batched, and flushed when the server stops.
        ((resource, span),) = exported_spans(bodies)
    assert resource["service.name"] == "hello-ship"
    assert span.name == "POST /chat" and span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert vendor_parent(completions(upstream)[0]) == span.span_id.hex()


def test_the_console_exporter_writes_one_json_line_per_span_to_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    tracing.configure(TracingSettings(enabled=True, exporter="console"))
    span, _ = tracing.start_chat(request_context("req_c", [TRACEPARENT], 0.0), "/chat", False)
    assert span is not None
    span.refused(429, "rate_limited")
    anyio.run(tracing.flush)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is the log lines'
    (line,) = captured.err.splitlines()
    exported: dict[str, Any] = json.loads(line)
    assert exported["name"] == "POST /chat"
    assert exported["attributes"]["hello_ship.error_code"] == "rate_limited"


SPANS_OFF_SCRIPT = """
import sys
import httpx
from config.settings import Settings
from tests.servers import FAST_DEMO, app_server
from tests.upstreams.anthropic_wire import anthropic_upstream
from tests.upstreams.vendors import ANTHROPIC

with anthropic_upstream() as upstream:
    settings = Settings.from_env({**FAST_DEMO, **ANTHROPIC.env(upstream)})
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        for path in ("/chat", "/chat/stream"):
            response = client.post(live.url + path, json={"message": "hi"},
                                   headers={"traceparent": sys.argv[1]})
            assert response.status_code == 200, response.text
    assert "traceparent" in upstream.last.headers
print(sorted(name for name in sys.modules if name.startswith((
    "telemetry.otel_spans", "opentelemetry.sdk.trace", "opentelemetry.exporter",
    "opentelemetry.propagate"))))
"""


def test_with_spans_off_nothing_of_the_tracing_sdk_is_loaded() -> None:
    """The Anthropic SDK imports the OpenTelemetry API and redis-py the metrics SDK when it is
    installed; the tracing SDK, the exporters and the propagators stay unloaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", SPANS_OFF_SCRIPT, TRACEPARENT], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- configuration ---------------------------------------------------------------------------

def test_spans_are_off_unless_asked_for() -> None:
    assert Settings.from_env({}).tracing == TracingSettings(enabled=False)
    assert Settings.from_env(SPANS_ON).tracing.enabled
    # The SDK's own off switch wins.
    assert not Settings.from_env({**SPANS_ON, "OTEL_SDK_DISABLED": "true"}).tracing.enabled


@pytest.mark.parametrize(("env", "variable", "reason"), [
    ({"OTEL_ENABLED": "yes please"}, "OTEL_ENABLED", "must be one of"),
    ({"OTEL_ENABLED": "true", "OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER",
     "must be one of otlp, console, none"),
    ({"OTEL_ENABLED": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL", "only http/protobuf"),
])
def test_bad_values_stop_start_up_naming_the_variable(env: dict[str, str], variable: str,
                                                      reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_spans_on_without_the_sdk_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        None if name.startswith("opentelemetry") else find_spec(name, *args)))
    with pytest.raises(SettingsError, match=r"pip install 'hello-ship\[otel\]'") as caught:
        Settings.from_env(SPANS_ON)
    assert caught.value.variable == "OTEL_ENABLED"


def test_the_span_processor_hook_needs_spans_on() -> None:
    with pytest.raises(RuntimeError, match="OTEL_ENABLED"):
        tracing.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
