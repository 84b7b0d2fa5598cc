"""AWS Bedrock through the unified Converse API (`converse_stream`), with aioboto3.

Text comes from `contentBlockDelta`, the stop reason from `messageStop`, usage from the
closing `metadata` event. Credentials come from the normal AWS chain (environment, profile,
container or instance role); the endpoint from `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` when set.
The client, and so its connection pool, is made on first use and kept for the route's life.

botocore signs and sends the request and raises the HTTP errors; the answer's event stream is
read here from the HTTP response botocore opened (`eventstream`): botocore's own decoding of
each message, and the parsing of its JSON payload by the API's shapes, cost most of the
adapter's CPU per token. Only the events read are parsed, by `orjson`; as botocore does, a
`contentBlockDelta` must set one member of its `delta`, and an exception event is classed by
its type when the API defines it (else by its `:error-code`). Nothing checks the values (a
count may arrive as text, a field may be missing), so each field read is checked here: an
event of another shape is a malformed chunk, a vendor failure.

The request's `traceparent` is added to the HTTP request by a botocore `before-send` handler,
registered once on the client and reading the value of the call in progress from a context
variable. `before-send` comes after SigV4 signing, so the header is not signed: a proxy or
mesh that rewrites trace headers (as many do) cannot break the signature, just as botocore
leaves its own `X-Amzn-Trace-Id` out of the signature.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import botocore.exceptions
import orjson
from botocore.eventstream import ParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    SSOError,
    TokenRetrievalError,
)
from botocore.parsers import ResponseParserError

from providers.bedrock_runtime import VENDOR, BedrockRuntime
from providers.conversation import split_system
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRejected,
    ProviderUnavailable,
    error_for_status,
)
from providers.eventstream import FrameParser, Headers
from providers.spec import RouteSpec
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
    describe,
    malformed_chunk,
    read_optional,
    read_usage,
    retry_after_seconds,
    safe_code,
)

PROBE_TIMEOUT_S = 5.0
# The caller's temperature is on OpenAI's scale, 0 to 2; the models Bedrock serves through
# Converse (Claude, Llama, Mistral) take 0 to 1 and refuse more, so it is capped here.
MAX_TEMPERATURE = 1.0
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Exceptions sent inside the event stream name no HTTP status; this is the one each stands for.
_ERROR_STATUS: dict[str, int] = {
    "throttlingException": 429,
    "modelNotReadyException": 429,
    "serviceQuotaExceededException": 429,
    "modelTimeoutException": 408,
    "internalServerException": 500,
    "modelStreamErrorException": 502,
    "serviceUnavailableException": 503,
    "validationException": 400,
    "modelErrorException": 424,
    "accessDeniedException": 403,
    "unrecognizedClientException": 403,
    "resourceNotFoundException": 404,
}


# The `traceparent` of the call this task is making, for the `before-send` handler.
_TRACEPARENT: ContextVar[str | None] = ContextVar("bedrock_traceparent", default=None)


def _add_trace_context(request: Any, **kwargs: Any) -> None:
    """botocore `before-send` handler: the prepared, signed request gets the trace header."""
    traceparent = _TRACEPARENT.get()
    if traceparent is not None:
        request.headers["traceparent"] = traceparent


class BedrockConverseProvider:
    def __init__(self, spec: RouteSpec) -> None:
        self._spec = spec
        self._runtime = BedrockRuntime(spec, self._prepare)
        # The event and exception types of the stream in the API's model: botocore names an
        # exception event by its type only when the type is one of them.
        self._stream_members: frozenset[str] = frozenset()

    @property
    def route(self) -> str:
        return self._spec.name

    def _prepare(self, client: Any) -> None:
        client.meta.events.register("before-send.bedrock-runtime", _add_trace_context)
        operation = client.meta.service_model.operation_model("ConverseStream")
        self._stream_members = frozenset(operation.output_shape.members["stream"].members)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        system, turns = split_system(request.messages)
        arguments: dict[str, Any] = {
            "modelId": self._spec.model,
            "messages": [{"role": t.role, "content": [{"text": t.text}]} for t in turns],
            "inferenceConfig": {"maxTokens": self._spec.output_cap(request.max_tokens),
                                **_inference_sampling(request.sampling)},
        }
        if system:
            arguments["system"] = [{"text": text} for text in system]
        try:
            client = await self._runtime.client()
            # aiobotocore bounds connecting and reading, not the wait for a free pooled
            # connection: without this a burst past the pool queues with no limit.
            trace_token = _TRACEPARENT.set(request.traceparent)
            try:
                with anyio.fail_after(self._spec.timeout_s):
                    response = await client.converse_stream(**arguments)
            finally:
                _TRACEPARENT.reset(trace_token)
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the pipeline to report with its stack
            raise error from None
        events = response["stream"]
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            parser = FrameParser()
            async for chunk in _body(events).iter_any():
                for headers, payload in parser.feed(chunk):
                    message_type = headers.get(b":message-type")
                    if message_type == b"exception" or message_type == b"error":
                        raise _stream_error(self._exception_code(headers))
                    kind = headers.get(b":event-type")
                    if kind == b"contentBlockDelta":
                        text = _text(orjson.loads(payload))
                        if text:
                            yield TextDelta(text)
                    elif kind == b"messageStop":
                        reason = _stop_reason(orjson.loads(payload))
                        finish = _FINISH.get(reason, "stop")
                    elif kind == b"metadata":
                        usage = _usage(orjson.loads(payload))
            parser.end()
        except ProviderError:
            raise
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise
            raise error from None
        finally:
            # Closes the connection itself: the only way to stop an event stream mid-answer.
            events.close()
        if finish is None:
            raise ProviderUnavailable(f"{VENDOR}: the stream ended before the answer finished")
        if usage is not None:
            yield usage
        yield Finish(finish)

    def _exception_code(self, headers: Headers) -> str | None:
        """The code botocore gives an exception event: its type when the API's model has it,
        else its `:error-code` (an `error` event has only that)."""
        if headers.get(b":message-type") == b"exception":
            kind = _text_header(headers, b":exception-type")
            if kind is not None and kind in self._stream_members:
                return safe_code(kind)
        return safe_code(_text_header(headers, b":error-code"))

    async def probe(self) -> RouteHealth:
        """Credentials from the AWS chain, then a TCP connect to the runtime endpoint.

        The runtime API has no free read call, and a completion per probe would cost money,
        so reachability is the endpoint accepting a connection.
        """
        try:
            # Made here, at start-up, rather than by the first request: loading botocore's
            # service model holds the event loop for a good part of a second.
            client = await self._runtime.client()
        except ProviderMisconfigured as exc:
            return RouteHealth("missing", None, exc.message)
        except BotoCoreError as exc:
            return RouteHealth("unknown", False, f"{VENDOR}: {type(exc).__name__}")
        try:
            with anyio.fail_after(PROBE_TIMEOUT_S):
                credentials = await self._runtime.session().get_credentials()
        except (BotoCoreError, TimeoutError):
            credentials = None
        if credentials is None:
            return RouteHealth("missing", None, "no AWS credentials found")
        try:
            address = urlsplit(client.meta.endpoint_url)
            port = address.port or (443 if address.scheme == "https" else 80)
            with anyio.fail_after(PROBE_TIMEOUT_S):
                stream = await anyio.connect_tcp(address.hostname or "", port)
            await stream.aclose()
        except (OSError, TimeoutError, BotoCoreError) as exc:
            problem = f"{VENDOR}: endpoint unreachable ({type(exc).__name__})"
            return RouteHealth("present", False, problem)
        return RouteHealth("present", True)

    async def aclose(self) -> None:
        await self._runtime.aclose()


def _inference_sampling(sampling: Sampling) -> dict[str, Any]:
    """The caller's sampling as Converse's `inferenceConfig` fields; a field left at the
    model's default is not sent, so a request that sets none is the body it was before.
    Converse has no seed and no end-user field: those are not sent."""
    fields: dict[str, Any] = {}
    if sampling.temperature is not None:
        fields["temperature"] = min(sampling.temperature, MAX_TEMPERATURE)
    if sampling.top_p is not None:
        fields["topP"] = sampling.top_p
    if sampling.stop:
        fields["stopSequences"] = list(sampling.stop)
    return fields


def _body(events: Any) -> aiohttp.StreamReader:
    """The body of the HTTP response the event stream reads: botocore keeps it as the stream's
    `_raw_stream` (aiobotocore's is the aiohttp response) and closes it with the stream."""
    response = events._raw_stream
    if not isinstance(response, aiohttp.ClientResponse):
        raise TypeError(f"an event stream over {type(response).__name__}, not aiohttp's")
    return response.content


def _text_header(headers: Headers, name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("utf-8", "replace")


def _text(block_delta: object) -> str | None:
    """The text of a `contentBlockDelta`; None for another kind of delta (a tool call's)."""
    delta = block_delta.get("delta") if isinstance(block_delta, dict) else None
    if not isinstance(delta, dict):
        raise malformed_chunk(VENDOR)
    text = delta.get("text")
    # A union: botocore refuses one with no member, or more than one, set (a null is unset).
    if (text is None or len(delta) != 1) and sum(
            value is not None for key, value in delta.items() if key != "__type") != 1:
        raise malformed_chunk(VENDOR)
    return read_optional(text, str, VENDOR)


def _stop_reason(message_stop: object) -> str:
    reason = message_stop.get("stopReason") if isinstance(message_stop, dict) else None
    if not isinstance(reason, str):
        raise malformed_chunk(VENDOR)
    return reason


def _usage(metadata: object) -> Usage:
    """Cached input is counted apart from `inputTokens`; it is input all the same."""
    counts = metadata.get("usage") if isinstance(metadata, dict) else None
    return read_usage(counts, VENDOR, ("inputTokens", "cacheReadInputTokens",
                                       "cacheWriteInputTokens"), "outputTokens")


def vendor_error(exc: BaseException) -> ProviderError | None:
    """The project's error for a failure botocore or aiohttp raised, without vendor text;
    None for anything else (a bug here or in the SDK), which is not translated."""
    if isinstance(exc, NoCredentialsError):
        return ProviderMisconfigured(f"{VENDOR}: no AWS credentials found")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return ProviderMisconfigured(f"{VENDOR}: AWS credentials unusable ({type(exc).__name__})")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = safe_code(error.get("Code"))
        metadata = exc.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        if not isinstance(status, int) or status < 400:  # an exception inside the stream
            return _stream_error(code)
        return error_for_status(status, describe(VENDOR, status, code),
                                retry_after_seconds(metadata.get("HTTPHeaders")))
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
        return ProviderUnavailable(f"{VENDOR}: timed out")
    if isinstance(exc, ParserError):  # the framing: a length or checksum that does not match
        return ProviderUnavailable(f"{VENDOR}: malformed event stream frame")
    # An event's payload: not JSON (`orjson` raises a `json.JSONDecodeError`), not UTF-8, or
    # not of its shape (botocore's parser, which reads the HTTP errors).
    if isinstance(exc, json.JSONDecodeError | ResponseParserError | UnicodeDecodeError):
        return malformed_chunk(VENDOR)
    if isinstance(exc, _NETWORK_ERRORS):
        return ProviderUnavailable(f"{VENDOR}: connection failed ({type(exc).__name__})")
    if isinstance(exc, ParamValidationError):
        return ProviderRejected(f"{VENDOR}: request refused by the SDK (ParamValidationError)")
    if isinstance(exc, BotoCoreError):  # the rest is local AWS configuration (profiles, region)
        return ProviderMisconfigured(f"{VENDOR}: AWS configuration error ({type(exc).__name__})")
    return None


def _stream_error(code: str | None) -> ProviderError:
    """An exception sent inside the event stream names no HTTP status: its type stands for one."""
    status = _ERROR_STATUS.get(_lower_first(code or ""), 500)
    return error_for_status(status, describe(VENDOR + " stream error", None, code))


_CREDENTIAL_ERRORS = (PartialCredentialsError, CredentialRetrievalError, SSOError,
                      ProfileNotFound, TokenRetrievalError)
_NETWORK_ERRORS = (botocore.exceptions.ConnectionError, HTTPClientError, aiohttp.ClientError,
                   OSError)


def _lower_first(code: str) -> str:
    return code[:1].lower() + code[1:]
