"""The request context: which request (and trace) every log line of this task belongs to.

An incoming `X-Request-ID` is kept when it is a sane token, so a caller's id follows the
request through our logs; anything else is replaced, because it would end up in log lines.

Every request is part of a W3C trace: a valid incoming `traceparent` gives its trace id, its
span (the parent of ours) and its sampled flag; without one, or with an invalid one, the
trace starts here with a fresh id, as the W3C Trace Context spec says to. The request also
gets a span id of its own, the parent named in the `traceparent` of every vendor call it makes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# version-traceid-parentid-flags, lowercase hex; a later version may append "-" fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.DOTALL)
_SAMPLED = 0x01  # the one flag of version 00
_ZERO_TRACE = "0" * 32  # all-zero ids are invalid
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    trace_id: str | None
    started_at: float
    # This service's span of the request: the parent of the calls it makes for it.
    span_id: str | None = None
    # The caller's span, from a valid `traceparent`; None when the trace started here.
    parent_span_id: str | None = None
    sampled: bool = True

    def outgoing_traceparent(self) -> str | None:
        """The `traceparent` header of a call made for this request, naming our span."""
        if self.trace_id is None or self.span_id is None:
            return None
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    parent_id: str
    sampled: bool


current: ContextVar[RequestContext | None] = ContextVar("hello_ship_request", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_from(header: str | None) -> str:
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def parse_traceparent(values: Sequence[str]) -> TraceParent | None:
    """The W3C `traceparent` of a request's header values, or None when it has none that is
    valid (more than one header is not valid either)."""
    if len(values) != 1:
        return None
    match = _TRACEPARENT.fullmatch(values[0].strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    # Version 00 is exactly four fields; a later version may add fields, never change these.
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    # Only the sampled bit is kept: the other bits are not defined by version 00.
    return TraceParent(trace_id, parent_id, bool(int(flags, 16) & _SAMPLED))


def new_trace_id() -> str:
    while (trace_id := secrets.token_hex(16)) == _ZERO_TRACE:
        pass
    return trace_id


def new_span_id() -> str:
    while (span_id := secrets.token_hex(8)) == _ZERO_SPAN:
        pass
    return span_id


def request_context(request_id: str | None, traceparent: Sequence[str],
                    started_at: float) -> RequestContext:
    """The context of a request with these headers: the caller's trace continued, or a new
    one; a span id of its own either way."""
    parent = parse_traceparent(traceparent)
    return RequestContext(
        request_id=request_id_from(request_id),
        trace_id=parent.trace_id if parent is not None else new_trace_id(),
        started_at=started_at,
        span_id=new_span_id(),
        parent_span_id=parent.parent_id if parent is not None else None,
        # A trace started here is sampled: its ids are on every log line of the request.
        sampled=parent.sampled if parent is not None else True,
    )
