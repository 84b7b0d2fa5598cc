"""The OpenTelemetry side of `telemetry.tracing`; imported only when spans are on.

A tracer provider of the service's own, whose id generator hands out the ids the edge already
gave the request: a span made when the request reaches its route still carries the trace id of
the lines logged before it, and the span id the vendors were told is the parent.
"""

from __future__ import annotations

import os
import sys
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from telemetry.jsonlog import scrubbed
from telemetry.spans import Answer, Exporter
from telemetry.trace_context import RequestContext

SCOPE = "hello_ship"
DEFAULT_SERVICE_NAME = "hello-ship"

# (trace id, span id) for the span being started on this task, set just around it.
_next_ids: ContextVar[tuple[int, int] | None] = ContextVar("hello_ship_span_ids", default=None)


class _RequestIds(IdGenerator):
    """The request's own ids for its span; random ones for anything else."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        ids = _next_ids.get()
        return ids[0] if ids is not None else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = _next_ids.get()
        return ids[1] if ids is not None else self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return True  # the edge makes them with `secrets`


class OtelChatSpan:
    def __init__(self, span: trace.Span, ctx: RequestContext) -> None:
        self._span = span
        span_context = span.get_span_context()
        # A span that did not take the request's ids (the SDK turned off by its own
        # configuration) has no say in what the vendors are told.
        ours = span_context.is_valid and span_context.span_id == int(ctx.span_id or "0", 16)
        self._sampled = span_context.trace_flags.sampled if ours else ctx.sampled

    @property
    def sampled(self) -> bool:
        return self._sampled

    def streaming(self, stream: bool) -> None:
        self._span.set_attribute("hello_ship.stream", stream)

    def end(self, answer: Answer, http_status: int) -> None:
        usage = answer.usage
        attributes: dict[str, Any] = {
            "http.response.status_code": http_status,
            "hello_ship.outcome": answer.outcome,
            "hello_ship.model_route": answer.model_route,
            "hello_ship.fallback_tier": answer.fallback_tier,
            "hello_ship.attempts": answer.attempts,
            "hello_ship.ttft_ms": answer.ttft_ms(),
            "hello_ship.tokens_emitted": answer.tokens_emitted,
            "hello_ship.finish_reason": answer.finish_reason,
            "hello_ship.error_code": answer.error_code,
            "error.type": answer.error_code,
            "gen_ai.usage.input_tokens": usage.input_tokens if usage else None,
            "gen_ai.usage.output_tokens": usage.output_tokens if usage else None,
        }
        self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        failed = answer.outcome == "error" or http_status >= 500
        self._finish(failed, answer.error_code)

    def refused(self, http_status: int, error_code: str) -> None:
        self._span.set_attributes({
            "http.response.status_code": http_status,
            "hello_ship.outcome": ("cancelled" if error_code == "cancelled" else
                                   "error" if http_status >= 500 else "refused"),
            "hello_ship.error_code": error_code,
            "error.type": error_code,
        })
        # A server span is an error for the server's faults, not for a caller's 4xx.
        self._finish(http_status >= 500, error_code)

    def _finish(self, failed: bool, error_code: str | None) -> None:
        if failed:
            self._span.set_status(Status(StatusCode.ERROR, error_code))
        self._span.end()


class OtelSpans:
    def __init__(self, exporter: Exporter) -> None:
        resource = Resource.create()
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; else not "unknown_service".
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        # Not set as the global provider: see `telemetry.tracing`. Flushed by the app's lifespan,
        # since the server's last SIGTERM skips exit handlers.
        self._provider = TracerProvider(resource=resource, id_generator=_RequestIds(),
                                        shutdown_on_exit=False)
        span_exporter = _exporter(exporter)
        if span_exporter is not None:
            # Exports from its own thread, in batches: never on the event loop.
            self._provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self._tracer = self._provider.get_tracer(SCOPE)

    def start_chat(self, ctx: RequestContext, route: str, stream: bool) -> OtelChatSpan:
        parent = otel_context.Context()  # a root span, unless the caller sent a trace
        if ctx.parent_span_id is not None and ctx.trace_id is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
                int(ctx.trace_id, 16), int(ctx.parent_span_id, 16), is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if ctx.sampled else 0))), parent)
        ids = None
        if ctx.trace_id is not None and ctx.span_id is not None:
            ids = (int(ctx.trace_id, 16), int(ctx.span_id, 16))
        token = _next_ids.set(ids)
        try:
            span = self._tracer.start_span(
                f"POST {route}", context=parent, kind=SpanKind.SERVER,
                # When the request reached the edge, not this handler.
                start_time=time.time_ns() - int((time.monotonic() - ctx.started_at) * 1e9),
                attributes={"http.request.method": "POST", "http.route": route,
                            "hello_ship.stream": stream,
                            # A caller's X-Request-ID could look like a key: as in the logs.
                            "hello_ship.request_id": scrubbed(ctx.request_id)})
        finally:
            _next_ids.reset(token)
        return OtelChatSpan(span, ctx)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self._provider.add_span_processor(processor)

    def flush(self, timeout_s: float) -> None:
        self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self._provider.shutdown()


def _exporter(kind: Exporter) -> SpanExporter | None:
    if kind == "otlp":
        # Endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        # One JSON line per span on stderr: stdout carries the service's own log lines.
        return ConsoleSpanExporter(out=sys.stderr, formatter=_one_line)
    return None


def _one_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + os.linesep
