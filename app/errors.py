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

from app.openai_wire import error_object
from telemetry import trace_context

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


