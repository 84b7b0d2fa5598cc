"""HTTP/1 details the connection protocol (app.connections) needs: its refusals in the JSON
envelope, written before any request reaches the service; a response an HTTP/1.0 client may
be sent; and dropping a connection mid-response. They reach into uvicorn's request cycle
(`RequestResponseCycle`), which is why they live apart from the service's own responses.
"""

from __future__ import annotations

import http
from collections.abc import Sequence
from typing import cast

import orjson
from starlette.types import Message, Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from telemetry.trace_context import new_request_id

_UNBOUNDED = 1 << 62  # the "content length" of a body delimited by closing the connection


def error_bytes(status: int, code: str, message: str,
                extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole response: the status line, `extra` headers and the envelope's."""
    body, headers = _envelope(status, code, message)
    phrase = http.HTTPStatus(status).phrase.encode()
    return b"".join([b"HTTP/1.1 %d %s\r\n" % (status, phrase),
                     *(name + b": " + value + b"\r\n" for name, value in [*extra, *headers]),
                     b"\r\n", body])


def _envelope(status: int, code: str, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    request_id = new_request_id()
    body = orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
    return body, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                  (b"connection", b"close"), (b"x-request-id", request_id.encode())]


def error_app(status: int, code: str, message: str) -> ASGI3Application:
    """An app that answers every request with this error (a head refused once parsed)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, headers = _envelope(status, code, message)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return cast(ASGI3Application, app)


def drop(cycle: RequestResponseCycle) -> None:
    """Drop the connection mid-response, as for a client gone: the server has nothing to add,
    and what is still buffered for a reader that stopped reading would never go out (a close
    would wait for it, and hold the connection, forever)."""
    cycle.disconnected = True
    cycle.transport.abort()


def close_delimited(app: ASGI3Application, cycle: RequestResponseCycle) -> ASGI3Application:
    """The app as an HTTP/1.0 client may be answered: a response without a length is sent as
    it is and ends with the connection (uvicorn would chunk it), with one `Connection: close`."""

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        delimited = False

        async def send_10(message: Message) -> None:
            nonlocal delimited
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", ())
                           if name.lower() != b"connection"]
                if (scope["method"] != "HEAD" and message["status"] not in (204, 304)
                        and not any(name.lower() == b"content-length" for name, _ in headers)):
                    delimited = True
                    cycle.chunked_encoding = False
                    cycle.expected_content_length = _UNBOUNDED
                message = {**message, "headers": headers}
            elif delimited and not message.get("more_body", False):
                cycle.expected_content_length = len(message.get("body", b""))
            await send(message)

        await app(scope, receive, send_10)  # type: ignore[arg-type]

    return cast(ASGI3Application, run)
