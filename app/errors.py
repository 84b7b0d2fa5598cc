"""The JSON error envelope every failure before a stream starts is answered with.

    {"error": {"code": "...", "message": "...", "request_id": "..."}}

Under `/v1/` (OpenAI's API) the same error in OpenAI's shape, which its SDKs read:

    {"error": {"message": "...", "type": "...", "param": null, "code": "...", "request_id": "..."}}

Messages are written for the caller; they never echo the caller's input, a provider's raw
error body, a key, or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from quota.ledger import Refusal
from streaming.openai_frames import error_object
from telemetry import trace_context
from tenancy.errors import (
    LimitsUnavailable,
    OpenModeRefused,
    OverLimit,
    StreamTokenRefused,
    TenancyRefusal,
    Unauthenticated,
)

logger = logging.getLogger("hello_ship.edge")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """`fields` join the error body; `logged` join only its `request_rejected` line (what
    the operator needs and the caller is not told, such as its tenant's name)."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: Mapping[str, str] | None = None,
                 logged: Mapping[str, Any] | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.logged = dict(logged or {})
        self.fields = fields


def current_request_id() -> str:
    ctx = trace_context.current.get()
    return ctx.request_id if ctx is not None else trace_context.new_request_id()


OPENAI_PREFIX = "/v1/"


def error_response(error: ApiError, *, openai: bool = False) -> JSONResponse:
    status = error.status
    if openai:
        # OpenAI answers every invalid body with 400, which its SDKs raise as BadRequestError.
        status = 400 if status == 422 else status
        body = error_object(status, error.code, error.message, current_request_id(),
                            error.fields)
    else:
        body = {"code": error.code, "message": error.message,
                "request_id": current_request_id(), **error.fields}
    if status < 500:
        logger.info("request_rejected", extra={"status": status, "code": error.code,
                                               **error.logged})
    return JSONResponse({"error": body}, status_code=status, headers=error.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
INTERNAL_ERROR = ApiError(500, "internal_error", "Something went wrong on our side.")


def speaks_openai(request: Request) -> bool:
    path: str = request.scope.get("path", "")
    return path.startswith(OPENAI_PREFIX)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, openai=speaks_openai(request))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug below the edge: the envelope, never a stack trace (the edge logs the error)."""
    return error_response(INTERNAL_ERROR, openai=speaks_openai(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in our envelope."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = "No such route." if exc.status_code == 404 else str(exc.detail)
    return error_response(ApiError(exc.status_code, code, message, headers=exc.headers),
                          openai=speaks_openai(request))


# Tenancy's refusals as HTTP answers: the status, headers and words a caller gets for each.

def refusal_error(refusal: TenancyRefusal) -> ApiError:
    if isinstance(refusal, Unauthenticated):
        message = ("The API key is not valid." if refusal.key_sent
                   else "Send your API key as 'Authorization: Bearer <key>'.")
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(refusal, OpenModeRefused):
        return ApiError(503, "open_mode_refused", "This service has no API keys configured, "
                                                  "so it only answers callers on this host.")
    if isinstance(refusal, LimitsUnavailable):
        return ApiError(503, "limits_unavailable",
                        "Usage limits cannot be checked right now; please retry shortly.",
                        headers={"Retry-After": str(refusal.retry_after_s)})
    if isinstance(refusal, OverLimit):
        return _over_limit(refusal)
    if isinstance(refusal, StreamTokenRefused):
        return _STREAM_TOKEN_REFUSALS[refusal.reason]
    raise TypeError(f"no HTTP answer for {type(refusal).__name__}")


_STREAM_TOKEN_REFUSALS = {
    "invalid": ApiError(401, "invalid_stream_token", "The stream token is not valid: start the "
                                                     "answer again (POST /chat/streams)."),
    "expired": ApiError(401, "stream_token_expired", "The stream token has expired: start the "
                                                     "answer again (POST /chat/streams)."),
    "forbidden": ApiError(403, "stream_forbidden", "This token is for another answer."),
}


def _over_limit(over: OverLimit) -> ApiError:
    limits, kind = over.limits, over.refusal
    if kind in (Refusal.TENANT_RPM, Refusal.USER_RPM):
        who, limit = (("This API key's tenant", limits.rpm) if kind is Refusal.TENANT_RPM
                      else ("This API key's user", limits.user_rpm))
        return _too_many(over, "rate_limited",
                         f"{who} is over its limit of {limit} requests per minute.")
    if kind is Refusal.STREAMS:
        return _too_many(over, "too_many_streams",
                         f"This API key's tenant already has {limits.streams} answers in "
                         "progress; retry when one has finished.")
    what = "token" if kind is Refusal.TOKEN_BUDGET else "USD"
    if over.held_by_reservations:
        return _too_many(over, "budget_exceeded",
                         f"Answers in progress hold the rest of today's {what} budget; "
                         "retry when they have finished.")
    return _too_many(over, "budget_exceeded",
                     f"Today's {what} budget does not cover this request (its input plus "
                     f"max_tokens, up to {over.ask.tokens} tokens); a smaller max_tokens may "
                     "fit, and the budget renews at 00:00 UTC.")


def _too_many(over: OverLimit, code: str, message: str) -> ApiError:
    retry_after_s, limit = over.retry_after_s, over.refusal.value
    return ApiError(429, code, message, headers={"Retry-After": str(retry_after_s)},
                    logged={"tenant_id": over.ask.tenant, "user_id": over.ask.user,
                            "limit": limit, "retry_after_s": retry_after_s},
                    limit=limit, retry_after_s=retry_after_s)
