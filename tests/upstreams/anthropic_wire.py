"""A fake Anthropic Messages API: named SSE events from `message_start` to `message_stop`.

Routes: `POST /v1/messages` (streamed) and `GET /v1/models`; `x-api-key` checked.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.upstreams.common import (
    Quota,
    Script,
    Upstream,
    answer,
    receive,
    refusal,
    serve,
    turn_order_problem,
)

REQUEST_ID = "req_011CFakeAnthropic0001"
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "messages: roles must alternate between user and assistant"),
    401: ("authentication_error", "invalid x-api-key: {key}"),
    403: ("permission_error", "Your API key does not have permission to use the model."),
    404: ("not_found_error", "model: claude-nonexistent"),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit for key {key}."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _usage(script: Script, output_tokens: int) -> dict[str, Any]:
    """Anthropic counts cached input apart from `input_tokens`; `message_delta` repeats the
    input counts (cumulative) next to the running output count."""
    return {"input_tokens": script.input_tokens - script.cache_read_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": script.cache_read_tokens,
            "output_tokens": output_tokens,
            "server_tool_use": None}


def _delta_usage(script: Script) -> dict[str, Any]:
    if script.short_delta_usage:
        return {"input_tokens": script.input_tokens - script.cache_read_tokens,
                "output_tokens": script.output_tokens}
    return _usage(script, script.output_tokens)


def conversation_error(body: dict[str, Any]) -> str | None:
    """What the Messages API refuses about the turns themselves, as its 400 message."""
    problem = turn_order_problem(body)
    if problem == "first":
        return "messages: first message must use the \"user\" role"
    if problem == "repeat":
        return "messages: roles must alternate between \"user\" and \"assistant\""
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    return None


# API version 2026-10-21, the one SDK 2.x sends, refuses these on every model, even at their
# defaults, as fields it does not know; older versions take them.
_SAMPLING_REMOVED_IN = "2026-10-21"
_REMOVED_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def removed_field_error(body: dict[str, Any], version: str) -> str | None:
    """The 400 message for a sampling field the request's API version no longer has."""
    if version < _SAMPLING_REMOVED_IN:
        return None
    field = next((name for name in _REMOVED_SAMPLING_FIELDS if name in body), None)
    return None if field is None else f"{field}: Extra inputs are not permitted"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def event_frame(name: str, payload: Any) -> bytes:
    """One named event holding `payload` as it is, for a test's own (wrongly shaped) event."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicWire:
    media_type = "text/event-stream"
    auth_status = 401

    def opening(self, script: Script, model: str) -> list[bytes]:
        return [
            _event("message_start", {"type": "message_start", "message": {
                "id": "msg_01FakeAnthropic", "type": "message", "role": "assistant",
                "content": [], "model": model, "stop_reason": None, "stop_sequence": None,
                "usage": _usage(script, output_tokens=1)}}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
            _event("ping", {"type": "ping"}),
        ]

    def token(self, text: str) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": text}})

    def closing(self, script: Script) -> list[bytes]:
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": script.finish or "end_turn",
                                               "stop_sequence": None},
                                     "usage": _delta_usage(script)}),
            _event("message_stop", {"type": "message_stop"}),
        ]

    def quota_headers(self, quota: Quota) -> dict[str, str]:
        reset = (datetime.datetime.now(datetime.UTC)
                 + datetime.timedelta(seconds=quota.reset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"anthropic-ratelimit-requests-limit": str(quota.requests_limit),
                   "anthropic-ratelimit-requests-remaining": str(quota.requests_remaining),
                   "anthropic-ratelimit-requests-reset": reset}
        for kind in ("tokens", "input-tokens", "output-tokens"):
            headers |= {f"anthropic-ratelimit-{kind}-limit": str(quota.tokens_limit),
                        f"anthropic-ratelimit-{kind}-remaining": str(quota.tokens_remaining),
                        f"anthropic-ratelimit-{kind}-reset": reset}
        return headers

    def malformed(self) -> bytes:
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_de\n\n')

    def stream_error(self, error_type: str | None) -> bytes:
        return _event("error", {"type": "error", "error": {
            "type": error_type or "overloaded_error", "message": "Overloaded"}})

    def error(self, status: int, script: Script, presented_key: str) -> Response:
        kind, message = _ERRORS.get(status, _ERRORS[500])
        kind = script.error_code or kind
        headers = {"request-id": REQUEST_ID}
        if script.retry_after is not None:
            headers["retry-after"] = script.retry_after
        body = {"type": "error", "error": {"type": kind,
                                           "message": message.format(key=presented_key)},
                "request_id": REQUEST_ID}
        return JSONResponse(body, status_code=status, headers=headers)


def _presented_key(request: Request) -> str:
    """The API takes the key as `x-api-key` or, from newer SDKs, as a bearer token."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key", bearer)


def anthropic_app(upstream: Upstream) -> Starlette:
    async def messages(request: Request) -> Response:
        received = await receive(upstream, request)
        body = received.json or {}
        problem = conversation_error(body) or removed_field_error(
            body, request.headers.get("anthropic-version", ""))
        if problem is not None:
            return JSONResponse({"type": "error", "error": {
                "type": "invalid_request_error", "message": problem}}, status_code=400)
        model = str(body.get("model", ""))
        return await answer(upstream, AnthropicWire(), request, model,
                            _presented_key(request),
                            headers={"request-id": REQUEST_ID})

    async def models(request: Request) -> Response:
        await receive(upstream, request)
        refused = await refusal(upstream, AnthropicWire(), request, _presented_key(request))
        if refused is not None:
            return refused
        model = {"type": "model", "id": "claude-3-5-haiku-20241022",
                 "display_name": "Claude Haiku 3.5", "created_at": "2024-10-22T00:00:00Z"}
        return JSONResponse({"data": [model], "has_more": False, "first_id": model["id"],
                             "last_id": model["id"]})

    return Starlette(routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])


@contextmanager
def anthropic_upstream(api_key: str = "sk-ant-test-0123456789abcdef") -> Iterator[Upstream]:
    upstream = Upstream(api_key=api_key)
    with serve(anthropic_app(upstream), upstream) as live:
        yield live
