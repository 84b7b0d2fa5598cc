"""The outermost layer, pure ASGI so streams pass through unbuffered and cancellable.

It gives each request its context (request id, trace and span ids, start time), adds
`X-Request-ID` to every response, answers an unhandled error with the JSON envelope, and writes
one JSON access line per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.callers import client_address
from app.connections import ABORT
from app.errors import INTERNAL_ERROR, error_response
from config.connections import IPNetwork
from telemetry import trace_context

access_logger = logging.getLogger("hello_ship.access")
CLOSE = (b"connection", b"close")
logger = logging.getLogger("hello_ship.edge")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        ctx = trace_context.request_context(headers.get("x-request-id"),
                                      headers.getlist("traceparent"), time.monotonic())
        token = trace_context.current.set(ctx)
        id_header = (b"x-request-id", ctx.request_id.encode())
        status = 0
        body_pending = scope.get("extensions", {}).get(ABORT, {}).get("body_pending")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                if body_pending is not None and body_pending() and not any(
                        name.lower() == b"connection" for name, _ in message["headers"]):
                    message["headers"].append(CLOSE)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here once, as types and frames only. Not re-raised: the server would log
            # it again with its message, and mid-response all it can do is drop the connection,
            # which it also does when the app returns without finishing.
            logger.exception("unhandled_error")
            if not status:
                await error_response(INTERNAL_ERROR)(scope, receive, send_with_id)
        finally:
            access_logger.info("http_access", extra={
                "method": scope["method"],
                # Only paths of our own routes: anything else is whatever the caller typed.
                "path": scope["path"] if "endpoint" in scope else "<unmatched>",
                "status": status,
                "duration_ms": round((time.monotonic() - ctx.started_at) * 1000, 1),
                "client_ip": client_address(scope, self.trusted_proxies),
            })
            trace_context.current.reset(token)
