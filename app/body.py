"""Reading a JSON request body within a byte limit, without buffering an oversized one."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request

from app.errors import ApiError

# The rest of an oversized body is never read, so the connection cannot be reused.
_CLOSE = {"Connection": "close"}


def _check_content_type(value: str | None) -> None:
    media_type, *params = (part.strip().lower() for part in (value or "").split(";"))
    charset_ok = all(p in ("charset=utf-8", 'charset="utf-8"') for p in params
                     if p.startswith("charset="))
    if media_type != "application/json" or not charset_ok:
        raise ApiError(415, "unsupported_media_type",
                       "Content-Type must be application/json (UTF-8).")


async def read_json_object(request: Request, max_bytes: int,
                           timeout_s: float) -> dict[str, Any]:
    """The body as a JSON object, read within `max_bytes` and `timeout_s` (BODY_TIMEOUT_S: a
    client trickling its body a byte at a time holds a connection no longer than that)."""
    _check_content_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "body_too_large",
                       f"The request body is larger than {max_bytes} bytes.", headers=_CLOSE)
    body = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise ApiError(413, "body_too_large",
                                   f"The request body is larger than {max_bytes} bytes.",
                                   headers=_CLOSE)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"The request body did not arrive within "
                                            f"{timeout_s:g} seconds.", headers=_CLOSE) from None
    except ClientDisconnect:
        # Nobody will read this answer; it gives the access log a status (nginx's 499).
        raise ApiError(499, "client_closed_request",
                       "The client closed the connection before sending the body.") from None
    if not body.strip():
        raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The request body is not valid UTF-8.") from None
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", "The request body must be a JSON object.")
    return payload
