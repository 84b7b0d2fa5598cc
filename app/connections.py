"""The HTTP/1.1 connection, bounded whether or not a proxy is in front.

uvicorn's httptools protocol, with what it leaves to a proxy done here (config.connections):

- the request head (request line and headers) may be `MAX_HEADER_BYTES` long: beyond that it
  is answered 431 and the connection closed, counted as it arrives, so a 32 MB header is never
  held;
- the head must be complete `HEADER_TIMEOUT_S` after the connection opened or the next request
  began: a connection that sent nothing by then is closed, one that sent part of a head is
  answered 408 first; the app bounds its reads of a body (`BODY_TIMEOUT_S`, app.body), and a
  body the app did not want (it answered first) is not waited for: the connection closes;
- at most `MAX_CONNECTIONS` connections are open in this process; one more is answered 503;
- a response to an HTTP/1.0 request is never chunked (RFC 9112 forbids it): a body of unknown
  length ends when the connection closes;
- writes wait in small buffers: `WRITE_BUFFER_BYTES` in the process, and as much not yet sent
  in the kernel (`TCP_NOTSENT_LOWAT`), not the megabytes its send buffer would grow to. Data
  in flight is not limited, so a reader that keeps up is not slowed; one that stops reading
  holds up its stream's sends once its own receive window and these 32 KB are full, and
  `SEND_TIMEOUT_S` then means what it says. A stream the app drops for that (`ABORT`, an ASGI
  extension) is closed without the server's error line.

All of it leans on uvicorn's protocol and request cycle (uvicorn is pinned below 1.0); the
tests run it through real sockets. `hello-ship serve` runs with it; plain uvicorn takes it with
`--http app.connections:EdgeProtocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from typing import Any, ClassVar, cast

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.http1 import close_delimited, drop, error_app, error_bytes
from config.connections import ConnectionLimits, read_connection_limits
from config.env import EnvReader
from telemetry.connection_refusals import RefusalLog, count_malformed_requests

# scope["extensions"][ABORT]["drop"](): drop the connection mid-response, quietly.
# scope["extensions"][ABORT]["body_pending"](): the request's body has not all arrived, so a
# response now (a refusal before the body was read) must say `Connection: close`: the
# connection closes after it, and a client must not send its next request down it.
ABORT = "hello_ship.abort"
WRITE_BUFFER_BYTES = 16_384


@functools.cache
def _limits_from_environment() -> ConnectionLimits:
    """Read once per process; start-up has already refused a bad value (config.settings)."""
    return read_connection_limits(EnvReader(os.environ))


class _Head:
    """Where a connection's request head stands: its deadline and its size so far."""

    __slots__ = ("begun", "limits", "parsed", "reading", "size", "timer")

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.timer: asyncio.TimerHandle | None = None
        self.reading = True  # between requests, or inside a request line and its headers
        self.size = 0  # of the head being read as far as it came (then of its trailers)
        self.begun = 0  # requests begun on this connection
        self.parsed = 0  # heads complete on this connection


class EdgeProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits | None] = None  # None: from the environment
    refusals: ClassVar[RefusalLog] = RefusalLog()

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[EdgeProtocol]:
        """The protocol with these limits (servers made in-process: the eval command, tests)."""
        return cast(type[EdgeProtocol], type(cls.__name__, (cls,), {"limits": limits}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, not five: past 30 attributes an instance's dict stops sharing its
        # keys with the others' and takes 1.3 KB more, on every open connection.
        self._head = _Head(type(self).limits or _limits_from_environment())
        count_malformed_requests(self.refusals)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._head.limits.max_connections:
            self._refuse(503, "too_many_connections", "The server has too many open "
                         "connections; retry shortly.", "max_connections", (b"retry-after", b"1"))
            return
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_NOTSENT_LOWAT"):  # Linux, macOS
            with contextlib.suppress(OSError):  # not TCP (a Unix socket)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, WRITE_BUFFER_BYTES)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused: what else comes is not read
            return
        head = self._head
        if head.reading and head.timer is None and not self._answering():
            self._arm_head_timer()  # the next request's first bytes, on a kept-alive connection
        parsed, begun, in_head = head.parsed, head.begun, head.reading
        super().data_received(data)
        if (in_head and head.reading and head.parsed == parsed and head.begun == begun
                and not self.transport.is_closing()):
            # A head was open before this read and still is: all of the read was head, which
            # the parser holds. (A read that began in a body, ending it, was body; of a read
            # where a request began, the part before it may be the last of another's body:
            # that head is counted from its next read on, and measured exactly when it ends.)
            head.size += len(data)
            if head.size > head.limits.max_header_bytes:
                self._refuse(*self._too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        head = self._head
        head.reading, head.size, head.begun = True, 0, head.begun + 1
        if head.timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if not head.reading:  # a trailer, after a chunked body: counted with the head
            if self.transport.is_closing():
                return
            head.size += len(name) + len(value) + 4
            if head.size > head.limits.max_header_bytes:
                self._refuse(*self._too_large())
                return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        head = self._head
        self._cancel_head_timer()
        head.reading, head.parsed = False, head.parsed + 1
        # A head that came in one read was never counted as it arrived: its exact size.
        head.size = len(self.url) + sum(len(name) + len(value) + 4
                                        for name, value in self.headers)
        if head.size <= head.limits.max_header_bytes:
            super().on_headers_complete()
            return
        status, code, message, reason = self._too_large()
        self.refusals.add(reason)
        # The request goes its way through uvicorn's cycle (its body, if any, is parsed and
        # dropped), answered by the refusal instead of the service.
        app, self.app = self.app, error_app(status, code, message)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head.reading, self._head.size = True, 0

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            self._close()  # answered without its body: nobody waits for the rest
            return
        if self.transport.is_closing():  # closed by the cycle (Connection: close)
            self._close()
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        cycle.scope["extensions"] = {**cycle.scope.get("extensions", {}),
                                     ABORT: {"drop": functools.partial(drop, cycle),
                                             "body_pending": lambda: cycle.more_body}}
        if cycle.scope["http_version"] == "1.0":
            app = close_delimited(app, cycle)
        super()._start_asgi_task(cycle, app)

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _too_large(self) -> tuple[int, str, str, str]:
        return (431, "headers_too_large", f"The request line and headers are larger than "
                f"{self._head.limits.max_header_bytes} bytes.", "header_too_large")

    def _arm_head_timer(self) -> None:
        head = self._head
        head.timer = self.loop.call_later(head.limits.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head.timer is not None:
            self._head.timer.cancel()
            self._head.timer = None

    def _head_late(self) -> None:
        head = self._head
        head.timer = None
        if self.transport.is_closing():
            return
        if self._answering():  # a head sent ahead while an answer streams: not cut for it
            self._arm_head_timer()
        elif head.begun > head.parsed:
            self._refuse(408, "request_timeout", "The request head took too long to arrive.",
                         "header_timeout")
        else:  # not a request begun: an idle connection, nobody to answer
            self.refusals.add("idle")
            self._close()

    def _refuse(self, status: int, code: str, message: str, reason: str,
                *extra: tuple[bytes, bytes]) -> None:
        """Answer in the JSON envelope and close, unless a response is on the wire already.
        Written directly: no request has reached the app."""
        self.refusals.add(reason)
        self._cancel_head_timer()
        if not self._answering():
            self.transport.write(error_bytes(status, code, message,
                                             [*self.server_state.default_headers, *extra]))
        self._close()

    def _close(self) -> None:
        """Close once what was written has gone out; a client that takes none of it for
        SEND_TIMEOUT_S (the close waits on it) is cut off, so it frees its connection."""
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(self._head.limits.send_timeout_s, transport.abort)
