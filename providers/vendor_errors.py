"""Helpers the adapters share to turn a vendor's failure into a safe `ProviderError`.

Only wire problems are the vendor's failures: an HTTP status, an error event inside the
stream, a timeout, a broken connection, bytes that do not decode, and a chunk whose shape the
adapter cannot use (which the adapter checks for, field by field, with the `read_*` helpers
here). Anything else an adapter raises (a `TypeError` from a bug, an `AttributeError` from a
changed SDK) is not translated: each adapter's `vendor_error` answers None for it and the
exception goes on unchanged, for the pipeline to report as an internal error with its stack,
with no retry and no count against the route's breaker.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp
import anyio
import httpx2

from providers.errors import ProviderError, ProviderUnavailable
from providers.types import RouteHealth, Usage

T = TypeVar("T")

_SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
_MAX_RETRY_AFTER_S = 3600.0


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a vendor asked for: `retry-after-ms`, or `Retry-After` in seconds or a date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return _bounded(float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        return _bounded(parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _bounded(seconds: float) -> float | None:
    if seconds != seconds or seconds < 0:  # nan or a date in the past
        return 0.0 if seconds < 0 else None
    return min(seconds, _MAX_RETRY_AFTER_S)


def safe_code(value: object) -> str | None:
    """A vendor's error code or type, if it looks like an identifier and not free text.

    Vendors echo fragments of the key in their messages (`Incorrect API key provided:
    sk-…abcd`), so messages are never kept; an identifier-shaped code is.
    """
    if isinstance(value, str) and _SAFE_CODE.fullmatch(value):
        return value
    return None


def transport_failure(vendor: str, exc: BaseException,
                      sdk_timeout: type[Exception],
                      sdk_connection: type[Exception]) -> ProviderError | None:
    """Timeouts, broken connections and undecodable bytes (not JSON, not UTF-8), as the SDKs
    built on httpx2 raise them over their aiohttp transport (their own classes, or the
    transport's, which they let through mid-stream); None for anything else: a `ValueError`,
    `TypeError` or `AttributeError` is no proof that the vendor's bytes were at fault."""
    if isinstance(exc, sdk_timeout | httpx2.TimeoutException):
        what = "timed out" if _timed_out(exc) else "connection failed"
        return ProviderUnavailable(f"{vendor}: {what}")
    # aiohttp's own errors come through mid-stream where its transport has no mapping.
    if isinstance(exc, sdk_connection | httpx2.RequestError | ssl.SSLError | OSError
                  | anyio.EndOfStream | aiohttp.ClientError):
        return ProviderUnavailable(f"{vendor}: connection failed")
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return malformed_chunk(vendor)
    return None


def _timed_out(exc: BaseException) -> bool:
    """Whether a timeout the SDK raised was one. Its aiohttp transport reports every aiohttp
    connection error as `httpx2.ConnectTimeout` (a refused connection, a server that hung up);
    the aiohttp error it stands for is kept as the cause, and only aiohttp's timeouts are
    `TimeoutError`s."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return isinstance(cause, TimeoutError)
        cause = cause.__cause__
    return True


def malformed_chunk(vendor: str) -> ProviderUnavailable:
    """A chunk the vendor sent in a shape the adapter cannot use: a wire problem, so the
    route chain may retry it."""
    return ProviderUnavailable(f"{vendor}: malformed stream chunk")


# The per-chunk checks below are one call and an isinstance or two each: they run for every
# token (`make bench-adapters`).

def read_optional(value: object, kind: type[T], vendor: str) -> T | None:
    """A field of a vendor's chunk that is either left out (None) or of type `kind`."""
    if value is None or isinstance(value, kind):
        return value
    raise malformed_chunk(vendor)


def read_count(value: object, vendor: str) -> int | None:
    """A token count as the vendor sent it: None when left out, else a non-negative int
    (not a bool, a float or a numeric string, which `int()` would have let through)."""
    if value is None or (type(value) is int and value >= 0):
        return value
    raise malformed_chunk(vendor)


def read_usage(counts: object, vendor: str, input_fields: tuple[str, ...],
               output_field: str) -> Usage:
    """`Usage` from a vendor's JSON object of counts: the input fields summed (cached input
    is input all the same), a count left out as 0, any other shape a malformed chunk."""
    if not isinstance(counts, dict):
        raise malformed_chunk(vendor)
    return Usage(sum(read_count(counts.get(name), vendor) or 0 for name in input_fields),
                 read_count(counts.get(output_field), vendor) or 0)


def body_error_field(body: object, field: str) -> str | None:
    """`error.<field>` (or `<field>`) of a vendor's error body, if identifier-shaped."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return safe_code(inner.get(field))
    return None


def describe(vendor: str, status: int | None, code: str | None) -> str:
    """The operator-facing message: vendor, status and code, nothing the vendor wrote."""
    parts = [vendor]
    if status is not None:
        parts.append(f"returned HTTP {status}")
    if code:
        parts.append(f"({code})")
    return " ".join(parts)


async def probe_by_listing(list_models: Awaitable[object],
                           to_error: Callable[[BaseException], ProviderError | None]
                           ) -> RouteHealth:
    """A route check that lists the vendor's models with the route's key: free, and a
    refused key shows. A 4xx still proves the vendor up (some compatible servers have no
    model list); a 5xx, a timeout or a refused connection does not. What `to_error` does not
    know as a vendor failure is raised as it is: readiness logs it with its stack."""
    try:
        await list_models
    except Exception as exc:
        error = to_error(exc)
        if error is None:
            raise
        if error.status_code in (401, 403):
            return RouteHealth("refused", True, f"key refused (HTTP {error.status_code})")
        if error.status_code is not None and error.status_code < 500:
            return RouteHealth("present", True)  # 404 (no model list here) or 429: it works
        return RouteHealth("present", False, error.message)
    return RouteHealth("present", True)
