"""A chat request's numbers, counted once when it ends (nothing here runs per token)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.errors import ApiError
from app.responses import ERROR_STATUS
from streaming.record import StreamRecord
from telemetry.metrics import (
    COST,
    DISCONNECTS,
    DURATION,
    FALLBACKS,
    REQUESTS,
    STREAM_ERRORS,
    TOKENS,
    TTFT,
)
from tenancy.admission import Bill

CHAT_PATHS = {"/chat": "chat", "/chat/stream": "stream", "/chat/streams": "stream",
              "/v1/chat/completions": "openai"}
REACHED_PIPELINE = "reached_pipeline"  # set on the request's state by the chat handler
CHAT_ENDPOINT = "chat_endpoint"  # set once the body said which (OpenAI's `stream`)
_LEFT = ("client_disconnected", "client_stalled")


def status_class(record: StreamRecord, http_status: int, endpoint: str) -> str:
    """The answer's status class; a stream's is the one its error code has on `/chat`, so an
    error budget reads the same on both endpoints. A client that left is a 4xx (499), an
    answer the server cut short (a shutdown backstop, a bug) a 5xx."""
    if record.outcome in ("cancelled", "pending"):
        status = 503
    elif endpoint in ("chat", "openai") or http_status >= 400:  # the status the client got
        status = http_status
    elif record.outcome == "ok":
        status = 200
    elif record.outcome in _LEFT:
        status = 499
    else:
        status = ERROR_STATUS.get(record.error_code or "", 500)
    return f"{status // 100}xx"


def observe_answer(record: StreamRecord, bill: Bill, route: str, endpoint: str,
                   http_status: int, counts_as_fallback: bool = True) -> None:
    """Count an answer that reached the pipeline; `route` is the one that answered (or the
    primary, when none did). A route an operator pinned is no fallback, whatever its tier."""
    outcome = "cancelled" if record.outcome == "pending" else record.outcome
    code = record.error_code or "none"
    REQUESTS.labels(endpoint, route, outcome, status_class(record, http_status, endpoint),
                    code).inc()
    DURATION.labels(route, endpoint).observe(time.monotonic() - record.started_at)
    if record.first_token_at is not None:
        TTFT.labels(route, endpoint).observe(record.first_token_at - record.started_at)
        if outcome == "error":
            STREAM_ERRORS.labels(route, endpoint, code).inc()
    if outcome in _LEFT:
        phase = "before_first_token" if record.first_token_at is None else "after_first_token"
        DISCONNECTS.labels(endpoint, phase).inc()
    if counts_as_fallback and record.fallback_tier in ("fallback", "cache", "static"):
        FALLBACKS.labels(route, record.fallback_tier).inc()
    spend = bill.spend
    if spend.input_tokens:
        TOKENS.labels(route, "input").inc(spend.input_tokens)
    if spend.output_tokens:
        TOKENS.labels(route, "output").inc(spend.output_tokens)
    if bill.cost_usd:
        COST.labels(route).inc(bill.cost_usd)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def counting_rejections(handler: Handler) -> Handler:
    """The error handler, also counting a chat request it refuses before any provider call
    (auth, validation, limits, guardrails, a bug); other paths are not chat requests."""

    async def handle(request: Request, exc: Exception) -> Response:
        response = await handler(request, exc)
        endpoint = getattr(request.state, CHAT_ENDPOINT, None) or CHAT_PATHS.get(
            request.scope.get("path", ""))
        # A request that reached the pipeline is counted when it ends, error or not.
        if endpoint is not None and not getattr(request.state, REACHED_PIPELINE, False):
            code = exc.code if isinstance(exc, ApiError) else "internal_error"
            REQUESTS.labels(endpoint, "none", "rejected",
                            f"{response.status_code // 100}xx", code).inc()
        return response

    return handle
