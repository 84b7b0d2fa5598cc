"""Anthropic's Messages API, streamed through `AsyncAnthropic.messages.create(stream=True)`.

Text comes from `content_block_delta` text deltas; input tokens from `message_start` (and
`message_delta` when it repeats them), output tokens from the running count in
`message_delta`. The system prompt goes in `system`. The raw event stream is used rather
than the `messages.stream` helper, which builds a snapshot of the whole message and an extra
event on every delta: the same stream costs it twice the CPU.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anthropic
import anyio
from anthropic import AsyncAnthropic
from anthropic.types import MessageParam

from providers.conversation import Turn, split_system
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    error_for_status,
)
from providers.spec import RouteSpec, missing_key
from providers.types import (
    CompletionRequest,
    Finish,
    FinishReason,
    ProviderEvent,
    RouteHealth,
    TextDelta,
    Usage,
)
from providers.vendor_errors import (
    body_error_field,
    describe,
    probe_by_listing,
    retry_after_seconds,
    transport_failure,
)

VENDOR = "anthropic"
PROBE_TIMEOUT_S = 5.0
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
# Errors sent inside a 200 stream carry only their type; this is the status each stands for.
_STREAM_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicMessagesProvider:
    def __init__(self, spec: RouteSpec) -> None:
        self._spec = spec
        key = spec.credentials.key if spec.credentials else None
        self._client: AsyncAnthropic | None = None
        if key is not None:
            self._client = AsyncAnthropic(
                api_key=key.reveal(),
                base_url=spec.base_url,
                max_retries=0,  # the route chain retries, knowing fallback and budgets
                timeout=anthropic.Timeout(spec.timeout_s, connect=spec.connect_timeout_s),
                # The SDK's own call spans would put their own `traceparent` in place of the
                # request's (a new trace, when the process has a global tracer provider and
                # no current span); off, it also calls nothing of OpenTelemetry per request.
                open_telemetry=False,
            )

    @property
    def route(self) -> str:
        return self._spec.name

    def _require_client(self) -> AsyncAnthropic:
        if self._client is None:
            raise ProviderMisconfigured(f"{VENDOR}: {missing_key(self._spec)}")
        return self._client

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        client = self._require_client()
        system, turns = split_system(request.messages)
        try:
            stream = await client.messages.create(
                model=self._spec.model,
                max_tokens=self._spec.output_cap(request.max_tokens),
                messages=[_message(turn) for turn in turns],
                system="\n\n".join(system) if system else anthropic.omit,
                stream=True,
                extra_headers=request.trace_headers(),
            )
        except Exception as exc:
            raise vendor_error(exc) from None
        input_counts = _InputCounts()
        output_tokens = 0
        finish: FinishReason | None = None
        stopped = False
        try:
            async for event in stream:
                if event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(event.delta.text)
                elif event.type == "message_start":
                    input_counts.update(event.message.usage)
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                    input_counts.update(event.usage)
                    if event.delta.stop_reason is not None:
                        finish = _FINISH.get(event.delta.stop_reason, "stop")
                elif event.type == "message_stop":
                    stopped = True
        except ProviderError:
            raise
        except Exception as exc:
            raise vendor_error(exc) from None
        finally:
            with anyio.move_on_after(5, shield=True):
                await stream.close()
        if not stopped or finish is None:
            raise ProviderUnavailable(f"{VENDOR}: the stream ended before the answer finished")
        yield Usage(input_tokens=input_counts.total, output_tokens=output_tokens)
        yield Finish(finish)

    async def probe(self) -> RouteHealth:
        """Lists one model."""
        if self._client is None:
            return RouteHealth("missing", reachable=None, problem=missing_key(self._spec))
        return await probe_by_listing(
            self._client.models.list(limit=1, timeout=PROBE_TIMEOUT_S), vendor_error)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _message(turn: Turn) -> MessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": turn.text}
    return {"role": "user", "content": turn.text}


class _InputCounts:
    """Anthropic bills cached input apart from `input_tokens`; `message_delta` may repeat any
    of the three counts (cumulative) or leave some out, so each keeps its last known value."""

    def __init__(self) -> None:
        self.uncached = self.cache_write = self.cache_read = 0

    def update(self, usage: anthropic.types.Usage | anthropic.types.MessageDeltaUsage) -> None:
        if usage.input_tokens is not None:
            self.uncached = usage.input_tokens
        if usage.cache_creation_input_tokens is not None:
            self.cache_write = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self.cache_read = usage.cache_read_input_tokens

    @property
    def total(self) -> int:
        return self.uncached + self.cache_write + self.cache_read


def vendor_error(exc: BaseException) -> ProviderError:
    """The project's error for whatever the SDK raised; never keeps the vendor's message."""
    failure = transport_failure(VENDOR, exc, anthropic.APITimeoutError,
                                anthropic.APIConnectionError)
    if failure is not None:
        return failure
    if isinstance(exc, anthropic.APIStatusError):
        error_type = body_error_field(exc.body, "type")
        status = exc.status_code
        if status < 400:  # an `error` event inside the stream
            status = _STREAM_ERROR_STATUS.get(error_type or "", 500)
            return error_for_status(status, describe(VENDOR + " stream error", None, error_type))
        return error_for_status(status, describe(VENDOR, status, error_type),
                                retry_after_seconds(exc.response.headers))
    return ProviderError(f"{VENDOR}: {type(exc).__name__}")
