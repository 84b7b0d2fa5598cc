"""Optional OpenTelemetry spans: one server span for each chat request.

Off by default. Then nothing of the OpenTelemetry SDK is imported (`app.otel_spans` is
imported only when spans are turned on) and a request pays one check, `_source is None`.

On (`OTEL_ENABLED=true`, with `pip install 'hello-ship[otel]'`), each `POST /chat` and
`POST /chat/stream` gets a `SERVER` span named after its route. The span takes the ids the
edge already gave the request, so the `trace_id` of its log lines and the parent span id
the vendors receive in `traceparent` name this span: a vendor's own spans nest under it.
Its attributes say how the request went (the route that answered, the fallback tier, the
outcome and error code, TTFT, tokens in and out); never user text, keys or tenants.

The spans go through a tracer provider of the service's own, not the process-wide one: the
vendor SDKs would otherwise start spans of their own in other traces and send those in the
`traceparent` instead. The exporter, sampler and resource follow the standard `OTEL_*`
variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, ...).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

import anyio

from app import context
from app.context import RequestContext
from app.env import EnvReader, SettingsError
from app.errors import ApiError
from streaming.record import StreamRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

Exporter = Literal["otlp", "console", "none"]
EXPORTERS: tuple[Exporter, ...] = ("otlp", "console", "none")
OTLP_PROTOCOL = "http/protobuf"  # the one the `otel` extra installs an exporter for
FLUSH_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install 'hello-ship[otel]'"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    enabled: bool = False
    exporter: Exporter = "otlp"


def read_tracing(env: EnvReader) -> TracingSettings:
    """`OTEL_ENABLED` and the exporter; the OpenTelemetry SDK reads the rest of `OTEL_*`."""
    enabled = env.choice("OTEL_ENABLED", "false", ("true", "false", "1", "0")) in ("true", "1")
    # The standard switch that turns the whole SDK off wins over ours.
    if not enabled or (env.raw("OTEL_SDK_DISABLED") or "").lower() == "true":
        return TracingSettings()
    exporter = env.choice("OTEL_TRACES_EXPORTER", "otlp", EXPORTERS)
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise SettingsError("OTEL_ENABLED", f"needs the OpenTelemetry SDK: {INSTALL_HINT}")
    if exporter == "otlp":
        protocol = env.text("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                            env.text("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL))
        if protocol != OTLP_PROTOCOL:
            raise SettingsError("OTEL_EXPORTER_OTLP_PROTOCOL",
                                f"only {OTLP_PROTOCOL} is supported, got {protocol!r}")
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
            raise SettingsError("OTEL_TRACES_EXPORTER",
                                f"otlp needs the OTLP exporter: {INSTALL_HINT}")
    return TracingSettings(enabled=True, exporter=exporter)  # type: ignore[arg-type]


class ChatSpan(Protocol):
    """The span of one chat request, ended once with how the request went."""

    @property
    def sampled(self) -> bool: ...

    def end(self, record: StreamRecord, http_status: int) -> None: ...

    def refused(self, http_status: int, error_code: str) -> None: ...


class SpanSource(Protocol):
    def start_chat(self, ctx: RequestContext, route: str, stream: bool) -> ChatSpan: ...

    def add_span_processor(self, processor: SpanProcessor) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def shutdown(self) -> None: ...


_source: SpanSource | None = None


def configure(settings: TracingSettings) -> None:
    """Turn spans on or off for this process (the app factory calls it)."""
    global _source
    previous, _source = _source, None
    if previous is not None:
        previous.shutdown()
    if settings.enabled:
        from app import otel_spans  # here only: with spans off, OpenTelemetry stays unloaded

        _source = otel_spans.OtelSpans(settings.exporter)


def add_span_processor(processor: SpanProcessor) -> None:
    """Send the spans to one more processor as well (tests; embedding the service)."""
    if _source is None:
        raise RuntimeError("spans are off: set OTEL_ENABLED=true")
    _source.add_span_processor(processor)


def start_chat(ctx: RequestContext, route: str,
               stream: bool) -> tuple[ChatSpan | None, RequestContext]:
    """The request's span, or None when spans are off; and its context, whose sampled flag
    the sampler may have changed (it travels to the vendors)."""
    source = _source
    if source is None:
        return None, ctx
    span = source.start_chat(ctx, route, stream)
    if span.sampled != ctx.sampled:
        ctx = replace(ctx, sampled=span.sampled)
        context.current.set(ctx)
    return span, ctx


def refused(span: ChatSpan, error: BaseException) -> None:
    """End the span of a request that never reached a provider (or broke on the way)."""
    if isinstance(error, ApiError):
        span.refused(error.status, error.code)
    elif isinstance(error, Exception):
        span.refused(500, "internal_error")
    else:  # cancelled: the client left or the server is stopping
        span.refused(499, "cancelled")


async def flush() -> None:
    """Export what is buffered (the server is stopping), off the event loop."""
    source = _source
    if source is None:
        return
    # The SDK's flush may wait for every batch's export timeout in turn; the server stops
    # after FLUSH_TIMEOUT_S at most, leaving the rest to the exporter thread (a daemon).
    with anyio.move_on_after(FLUSH_TIMEOUT_S, shield=True) as waiting:
        await anyio.to_thread.run_sync(source.flush, FLUSH_TIMEOUT_S, abandon_on_cancel=True)
    if waiting.cancelled_caught:
        raise TimeoutError(f"spans not exported within {FLUSH_TIMEOUT_S}s")
