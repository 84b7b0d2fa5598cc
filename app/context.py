"""The request context: which request (and trace) every log line of this task belongs to.

An incoming `X-Request-ID` is kept when it is a sane token, so a caller's id follows the
request through our logs; anything else is replaced, because it would end up in log lines.
A W3C `traceparent` contributes its trace id.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    trace_id: str | None
    started_at: float


current: ContextVar[RequestContext | None] = ContextVar("hello_ship_request", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_from(header: str | None) -> str:
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def trace_id_from(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C traceparent header, else None."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match[1] == "ff" or set(match[2]) == {"0"} or set(match[3]) == {"0"}:
        return None
    return match[2]
