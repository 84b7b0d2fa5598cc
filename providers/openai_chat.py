"""OpenAI chat completions, and any server that speaks them (LiteLLM, vLLM, Ollama, gateways).

One `AsyncOpenAI` per route, created once: its connection pool is reused by every request.
Usage comes from the vendor's own final chunk (`stream_options.include_usage`).

The request is the one the client's own `post` builds (its auth, base URL, headers, HTTP
stack, timeouts and status errors), built once per client (`sdk_post`); the HTTP response's
event stream is read here
(`http_events`): the SDK's line-by-line SSE decoding and `json.loads` cost more than the rest
of the adapter, and its typed chunk models (about 285 µs a chunk) far more. Chunks are read as
plain JSON, of which the relay reads three fields. Reading dicts also tolerates the shapes
compatible servers take liberties with (`choices` or `delta` null, no `index`). Nothing checks
those dicts for us, so each field read is checked here: a chunk of another shape is a
malformed chunk, a vendor failure. An `error` object in a chunk is the vendor failing
mid-answer, and `[DONE]` ends the stream, as the SDK reads them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from urllib.parse import urlsplit

import openai
import orjson
from openai import AsyncOpenAI

from providers.credentials import KeySource, Secret, client_for_key
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    error_for_status,
)
from providers.headroom import Headroom
from providers.http_events import close, drain, events_of
from providers.openai_client import openai_client
from providers.sdk_post import SDKPost
from providers.spec import RouteSpec, missing_key
from providers.types import (
    CompletionRequest,
    Finish,
    FinishReason,
    ProviderEvent,
    RouteHealth,
    Sampling,
    TextDelta,
    Usage,
)
from providers.vendor_errors import (
    body_error_field,
    describe,
    malformed_chunk,
    probe_by_listing,
    read_optional,
    read_usage,
    retry_after_seconds,
    transport_failure,
)

VENDOR = "openai"
OFFICIAL_HOST = "api.openai.com"
PROBE_TIMEOUT_S = 5.0
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}


class OpenAIChatProvider:
    def __init__(self, spec: RouteSpec) -> None:
        self._spec = spec
        self.headroom = Headroom(spec.name)
        key = spec.credentials.key if spec.credentials else None
        self._client: AsyncOpenAI | None = None
        self._post: SDKPost | None = None
        if key is not None:
            self._use_client(self._new_client(key))
        # OpenAI itself has renamed the cap; servers that speak its protocol know the old name.
        host = (urlsplit(spec.base_url).hostname if spec.base_url else None) or OFFICIAL_HOST
        official = host == OFFICIAL_HOST or host.endswith("." + OFFICIAL_HOST)  # regional ones
        self._cap_field = "max_completion_tokens" if official else "max_tokens"

    @property
    def route(self) -> str:
        return self._spec.name

    def use_key(self, credentials: KeySource) -> None:
        """A rotated key for the requests that start from now (config.reload)."""
        self._spec = replace(self._spec, credentials=credentials)
        if credentials.key is not None:
            self._use_client(client_for_key(self._client, credentials.key, self._new_client))

    def _use_client(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._post = SDKPost(client, "/chat/completions", timeout_error=openai.APITimeoutError,
                             connection_error=openai.APIConnectionError)

    def _new_client(self, key: Secret) -> AsyncOpenAI:
        # Retries belong to the route chain, which knows about fallback and budgets.
        return openai_client(key, self._spec.base_url, timeout_s=self._spec.timeout_s,
                             connect_timeout_s=self._spec.connect_timeout_s)

    def _require_post(self) -> SDKPost:
        if self._post is None:
            raise ProviderMisconfigured(f"{VENDOR}: {missing_key(self._spec)}")
        return self._post

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        post = self._require_post()
        body = {
            "model": self._spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            self._cap_field: self._spec.output_cap(request.max_tokens),
            **_sampling_fields(request.sampling),
        }
        try:
            # The raw response, its body unread: the status errors are the SDK's as before.
            response = await post.send(body, request.trace_headers())
        except Exception as exc:
            if isinstance(exc, openai.APIStatusError):  # a 429 says how much is left too
                self.headroom.observe(exc.response.headers)
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the pipeline to report with its stack
            raise error from None
        self.headroom.observe(response.headers)
        finish: FinishReason | None = None
        usage: Usage | None = None
        events = events_of(response)
        try:
            done = False
            async for batch in events:
                for _, data in batch:
                    if data is None:  # an event with no data: no chunk in it
                        raise malformed_chunk(VENDOR)
                    if data.startswith(b"[DONE]"):
                        done = True
                        break
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict):
                        raise malformed_chunk(VENDOR)
                    if chunk.get("error"):
                        raise _stream_error(chunk["error"])
                    counts = chunk.get("usage")
                    if counts:  # null on every chunk but the last
                        usage = _usage(counts)
                    for choice in read_optional(chunk.get("choices"), list, VENDOR) or ():
                        if not isinstance(choice, dict):
                            raise malformed_chunk(VENDOR)
                        if choice.get("index") not in (0, None):
                            continue
                        delta = read_optional(choice.get("delta"), dict, VENDOR)
                        if delta:
                            text = read_optional(delta.get("content"), str, VENDOR)
                            if text:
                                yield TextDelta(text)
                        reason = read_optional(choice.get("finish_reason"), str, VENDOR)
                        if reason:
                            finish = _FINISH.get(reason, "stop")
                if done:
                    await drain(response, events)
                    break
        except ProviderError:
            raise
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise
            raise error from None
        finally:
            await close(response, events)
        if finish is None:
            raise ProviderUnavailable(f"{VENDOR}: the stream ended before the answer finished")
        if usage is not None:
            yield usage
        yield Finish(finish)

    async def probe(self) -> RouteHealth:
        """Lists models, which every compatible server has too."""
        if self._client is None:
            return RouteHealth("missing", reachable=None, problem=missing_key(self._spec))
        return await probe_by_listing(self._client.models.list(timeout=PROBE_TIMEOUT_S),
                                      vendor_error)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _sampling_fields(sampling: Sampling) -> dict[str, object]:
    """The caller's sampling under OpenAI's own names. A field left at the vendor's default
    is not sent at all, so a request that sets none is the very body it was before."""
    fields: dict[str, object] = {}
    if sampling.temperature is not None:
        fields["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        fields["top_p"] = sampling.top_p
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    if sampling.user is not None:
        # OpenAI now also takes `safety_identifier`, but `user` is the name every compatible
        # server knows too, and OpenAI still reads it for abuse monitoring.
        fields["user"] = sampling.user
    return fields


def _usage(counts: object) -> Usage:
    """`prompt_tokens` already includes the cached ones, unlike Anthropic's and Bedrock's."""
    return read_usage(counts, VENDOR, ("prompt_tokens",), "completion_tokens")


def vendor_error(exc: BaseException) -> ProviderError | None:
    """The project's error for a vendor failure the SDK raised, never keeping the vendor's
    message; None for anything else (a bug here or in the SDK), which is not translated."""
    failure = transport_failure(VENDOR, exc, openai.APITimeoutError, openai.APIConnectionError)
    if failure is not None:
        return failure
    if isinstance(exc, openai.APIStatusError):
        code = _error_code(exc.body)
        message = describe(VENDOR, exc.status_code, code)
        if code == "insufficient_quota":  # a 429 that waiting will not fix: billing
            return ProviderMisconfigured(message, status_code=exc.status_code)
        return error_for_status(exc.status_code, message,
                                retry_after_seconds(exc.response.headers))
    if isinstance(exc, openai.APIError):
        return _stream_error(exc.body)
    return None


def _stream_error(body: object) -> ProviderError:
    """An error sent inside a 200 stream: the vendor failed mid-answer."""
    return ProviderUnavailable(describe(VENDOR + " stream error", None, _error_code(body)))


def _error_code(body: object) -> str | None:
    return body_error_field(body, "code") or body_error_field(body, "type")
