"""Optional OpenTelemetry spans: one server span for each chat request.

Off by default. Then nothing of the OpenTelemetry SDK is imported (`telemetry.otel_spans` is
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

from dataclasses import replace
from typing import TYPE_CHECKING

import anyio

from telemetry import trace_context
from telemetry.spans import ChatSpan, SpanSource, TracingSettings
from telemetry.trace_context import RequestContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

FLUSH_TIMEOUT_S = 5.0

_source: SpanSource | None = None


def configure(settings: TracingSettings) -> None:
    """Turn spans on or off for this process (the app factory calls it)."""
    global _source
    previous, _source = _source, None
    if previous is not None:
        previous.shutdown()
    if settings.enabled:
        from telemetry import otel_spans  # here only: with spans off, OpenTelemetry stays unloaded

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
        trace_context.current.set(ctx)
    return span, ctx


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
