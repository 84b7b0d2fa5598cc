"""The shapes of the optional spans (see `telemetry.tracing`): their settings, the span of a
chat request and what it reports. Apart from both the switch and the OpenTelemetry side, so
that each imports these without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from telemetry.trace_context import RequestContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

Exporter = Literal["otlp", "console", "none"]
EXPORTERS: tuple[Exporter, ...] = ("otlp", "console", "none")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    enabled: bool = False
    exporter: Exporter = "otlp"


class TokenCounts(Protocol):
    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...


class Answer(Protocol):
    """How an answer went, as its span reports it: the pipeline's `StreamRecord` is one. A
    protocol, so that telemetry stays below the pipeline it counts."""

    @property
    def outcome(self) -> str: ...

    @property
    def model_route(self) -> str | None: ...

    @property
    def fallback_tier(self) -> str | None: ...

    @property
    def attempts(self) -> int: ...

    @property
    def tokens_emitted(self) -> int: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def error_code(self) -> str | None: ...

    @property
    def usage(self) -> TokenCounts | None: ...

    def ttft_ms(self) -> float | None: ...


class ChatSpan(Protocol):
    """The span of one chat request, ended once with how the request went."""

    @property
    def sampled(self) -> bool: ...

    def streaming(self, stream: bool) -> None:
        """Whether the answer streams, once known (OpenAI's endpoint says so in its body)."""

    def end(self, answer: Answer, http_status: int) -> None: ...

    def refused(self, http_status: int, error_code: str) -> None: ...


class SpanSource(Protocol):
    def start_chat(self, ctx: RequestContext, route: str, stream: bool) -> ChatSpan: ...

    def add_span_processor(self, processor: SpanProcessor) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def shutdown(self) -> None: ...
