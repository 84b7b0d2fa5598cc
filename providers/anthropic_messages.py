"""Anthropic's Messages API, streamed: the body `AsyncAnthropic.messages.create(stream=True)`
sends, as the request the SDK builds (`sdk_post`).

Text comes from `content_block_delta` text deltas; input tokens from `message_start` (and
`message_delta` when it repeats them), output tokens from the running count in
`message_delta`. The system prompt goes in `system`.

The SDK's request (auth, base URL, headers, timeouts, status errors) hands back an HTTP
response, read here (`http_events`): the SDK's line-by-line SSE decoding, `json.loads` and an
event model per chunk cost more than the rest of the adapter, and the SDK's
`messages.stream`, which rebuilds the whole message on every delta, twice that. As the SDK
does, events are told by their data's `type`, `ping` and unnamed events are skipped, and an
`error` event is the vendor failing mid-answer. Each field read is checked here: an event of
another shape is a malformed chunk, a vendor failure.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

import anthropic
import orjson
from anthropic import AsyncAnthropic
from anthropic.types import MessageParam

from providers.conversation import Turn, split_system
from providers.credentials import KeySource, Secret, client_for_key
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    error_for_status,
)
from providers.headroom import Headroom
from providers.http_events import close, events_of
from providers.sdk_post import SDKPost
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
    malformed_chunk,
    probe_by_listing,
    read_count,
    read_optional,
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
        self.headroom = Headroom(spec.name)
        key = spec.credentials.key if spec.credentials else None
        self._client: AsyncAnthropic | None = None
        self._post: SDKPost | None = None
        if key is not None:
            self._use_client(self._new_client(key))

    def _new_client(self, key: Secret) -> AsyncAnthropic:
        spec = self._spec
        return AsyncAnthropic(
            api_key=key.reveal(),
            base_url=spec.base_url,
            max_retries=0,  # the route chain retries, knowing fallback and budgets
            timeout=anthropic.Timeout(spec.timeout_s, connect=spec.connect_timeout_s),
            # The SDK's own call spans would put their own `traceparent` in place of the
            # request's (a new trace, when the process has a global tracer provider and no
            # current span); off, it also calls nothing of OpenTelemetry per request.
            open_telemetry=False,
            # aiohttp underneath the SDK's httpx2 client, as for OpenAI (openai_client).
            http_client=anthropic.DefaultAioHttpClient(),
        )

    @property
    def route(self) -> str:
        return self._spec.name

    def use_key(self, credentials: KeySource) -> None:
        """A rotated key for the requests that start from now (config.reload)."""
        self._spec = replace(self._spec, credentials=credentials)
        if credentials.key is not None:
            self._use_client(client_for_key(self._client, credentials.key, self._new_client))

    def _use_client(self, client: AsyncAnthropic) -> None:
        self._client = client
        self._post = SDKPost(client, "/v1/messages", timeout_error=anthropic.APITimeoutError,
                             connection_error=anthropic.APIConnectionError)

    def _require_post(self) -> SDKPost:
        if self._post is None:
            raise ProviderMisconfigured(f"{VENDOR}: {missing_key(self._spec)}")
        return self._post

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        post = self._require_post()
        system, turns = split_system(request.messages)
        # Of the caller's sampling, only stop sequences and the end user carry over. There is
        # no seed in Anthropic's API, and the API version this SDK sends (2026-10-21) refuses
        # `temperature` and `top_p` with a 400 on every model, even at their defaults: the SDK
        # has dropped them, and sending them anyway would fail every request that set them.
        # Claude samples at its own settings instead.
        sampling = request.sampling
        body: dict[str, object] = {
            "max_tokens": self._spec.output_cap(request.max_tokens),
            "messages": [_message(turn) for turn in turns],
            "model": self._spec.model,
        }
        if sampling.user is not None:
            body["metadata"] = {"user_id": sampling.user}
        if sampling.stop:
            body["stop_sequences"] = list(sampling.stop)
        body["stream"] = True
        if system:
            body["system"] = "\n\n".join(system)
        try:
            # The body `messages.create` would send, as the request it would build (sdk_post).
            response = await post.send(body, request.trace_headers())
        except Exception as exc:
            if isinstance(exc, anthropic.APIStatusError):  # a 429 says how much is left too
                self.headroom.observe(exc.response.headers)
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the pipeline to report with its stack
            raise error from None
        self.headroom.observe(response.headers)
        input_counts = _InputCounts()
        output_tokens = 0
        finish: FinishReason | None = None
        stopped = False
        events = events_of(response)
        try:
            async for batch in events:
                for name, data in batch:
                    if name is None or name == b"ping":
                        continue
                    if name == b"error":
                        raise _stream_error(_error_body(data))
                    if not data:
                        continue
                    event = orjson.loads(data)
                    if not isinstance(event, dict):
                        raise malformed_chunk(VENDOR)
                    kind = event.get("type")
                    if kind == "content_block_delta":
                        delta = _object(event.get("delta"))
                        if delta.get("type") == "text_delta":
                            text = delta.get("text")
                            if not isinstance(text, str):
                                raise malformed_chunk(VENDOR)
                            if text:
                                yield TextDelta(text)
                    elif kind == "message_start":
                        usage = _object(_object(event.get("message")).get("usage"))
                        input_counts.update(usage)
                        output_tokens = _output_tokens(usage)
                    elif kind == "message_delta":
                        usage = _object(event.get("usage"))
                        output_tokens = _output_tokens(usage)
                        input_counts.update(usage)
                        stop_reason = _object(event.get("delta")).get("stop_reason")
                        reason = read_optional(stop_reason, str, VENDOR)
                        if reason is not None:
                            finish = _FINISH.get(reason, "stop")
                    elif kind == "message_stop":
                        stopped = True
        except ProviderError:
            raise
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise
            raise error from None
        finally:
            await close(response, events)
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


def _object(value: object) -> dict[str, object]:
    """A field that must be a JSON object; a missing one, or a string, list or number in its
    place, is a malformed chunk."""
    if not isinstance(value, dict):
        raise malformed_chunk(VENDOR)
    return value


def _output_tokens(usage: dict[str, object]) -> int:
    """The running output count, which `message_start` and `message_delta` always carry."""
    count = read_count(usage.get("output_tokens"), VENDOR)
    if count is None:
        raise malformed_chunk(VENDOR)
    return count


class _InputCounts:
    """Anthropic bills cached input apart from `input_tokens`; `message_delta` may repeat any
    of the three counts (cumulative) or leave some out, so each keeps its last known value."""

    def __init__(self) -> None:
        self.uncached = self.cache_write = self.cache_read = 0

    def update(self, usage: dict[str, object]) -> None:
        """From the `usage` object of `message_start` or `message_delta`."""
        uncached = read_count(usage.get("input_tokens"), VENDOR)
        if uncached is not None:
            self.uncached = uncached
        cache_write = read_count(usage.get("cache_creation_input_tokens"), VENDOR)
        if cache_write is not None:
            self.cache_write = cache_write
        cache_read = read_count(usage.get("cache_read_input_tokens"), VENDOR)
        if cache_read is not None:
            self.cache_read = cache_read

    @property
    def total(self) -> int:
        return self.uncached + self.cache_write + self.cache_read


def vendor_error(exc: BaseException) -> ProviderError | None:
    """The project's error for a vendor failure the SDK raised, never keeping the vendor's
    message; None for anything else (a bug here or in the SDK), which is not translated."""
    failure = transport_failure(VENDOR, exc, anthropic.APITimeoutError,
                                anthropic.APIConnectionError)
    if failure is not None:
        return failure
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status < 400:  # an `error` event inside the stream
            return _stream_error(exc.body)
        error_type = body_error_field(exc.body, "type")
        return error_for_status(status, describe(VENDOR, status, error_type),
                                retry_after_seconds(exc.response.headers))
    if isinstance(exc, anthropic.APIError):  # another of the SDK's errors about the answer
        return ProviderError(f"{VENDOR}: {type(exc).__name__}")
    return None


def _stream_error(body: object) -> ProviderError:
    """An `error` event: the vendor failing mid-answer, classed by the status its type
    stands for (it names no status of its own)."""
    error_type = body_error_field(body, "type")
    status = _STREAM_ERROR_STATUS.get(error_type or "", 500)
    return error_for_status(status, describe(VENDOR + " stream error", None, error_type))


def _error_body(data: bytes | None) -> object:
    """An `error` event's data as JSON; anything else says nothing of the error's type."""
    try:
        return orjson.loads(data or b"")
    except orjson.JSONDecodeError:
        return None
