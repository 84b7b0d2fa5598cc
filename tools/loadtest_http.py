"""A lean HTTP/1.1 client for streamed answers: keep-alive connections on asyncio, responses
parsed by httptools (uvicorn's C parser), each body piece handed on with the time it was read.

A general client (httpx, aiohttp) costs tens of microseconds per piece of body on the way up
through its layers; a load tester reading 20,000 frames a second on one core cannot spend that.
This one does only what a streamed POST needs: it writes one request, feeds the bytes to the
parser and passes the decoded body to the request's `Recorder`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httptools
import idna

from tools.loadtest_record import Recorder

CONNECT_TIMEOUT_S = 10.0
USER_AGENT = "hello-ship-loadtest"


class TargetError(Exception):
    """The URL cannot be a target; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str  # shown in reports: no user or password in it
    host: str
    port: int
    path: str
    tls: ssl.SSLContext | None

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(f"{url!r} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise TargetError("put credentials in --key or --header, not in the URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise TargetError(f"{url!r} has a bad port") from None
        host = parts.hostname
        if not host.isascii():  # a name in any script, as browsers and httpx send it
            try:
                host = idna.encode(host, uts46=True).decode("ascii")
            except idna.IDNAError:
                raise TargetError(f"{url!r} has a host name that cannot be looked up") from None
        # Characters a request line cannot hold are percent-encoded; escapes already there stay.
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        netloc = host if ":" not in host else f"[{host}]"
        if parts.port:
            netloc += f":{parts.port}"
        return cls(f"{parts.scheme}://{netloc}{path}", host, port, path, tls)

    def with_path(self, path: str) -> Target:
        base = self.url[:len(self.url) - len(self.path)]
        return Target(base + path, self.host, self.port, path, self.tls)

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return host if self.port == default else f"{host}:{self.port}"


# Headers that frame the request: the client's own, never the user's.
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def request_head(target: Target, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers; the user's headers replace the defaults of the same
    name (Accept, Content-Type, User-Agent), whatever their case."""
    chosen = {"accept": ("Accept", "text/event-stream"),
              "content-type": ("Content-Type", "application/json")}
    for name, value in headers.items():
        chosen[name.lower()] = (name, value)
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}",
             f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for key, (name, value) in chosen.items() if key not in FRAMING]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect_error(error: BaseException) -> str:
    """A short, stable reason for a failed connection, for the errors table."""
    if isinstance(error, ConnectionRefusedError):
        return "connect refused"
    if isinstance(error, TimeoutError):
        return "connect timeout"
    if isinstance(error, socket.gaierror):
        return "connect name not resolved"
    if isinstance(error, ssl.SSLError):
        return "connect TLS failed"
    if isinstance(error, OSError) and error.errno is not None:
        return f"connect {errno.errorcode.get(error.errno, error.errno)}"
    return f"connect {type(error).__name__}"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._recorder: Recorder | None = None
        self._finished: asyncio.Future[None] | None = None
        self._request_id: str | None = None
        self._event_stream = False
        self._now = 0.0
        self._got_bytes = False
        self._keep_alive = True
        self._informational = False  # a 1xx answer (100 Continue, 103 Early Hints) is read

    def start(self, recorder: Recorder, request: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._recorder = recorder
        self._finished = asyncio.get_running_loop().create_future()
        self._request_id = None
        self._event_stream = False
        self._got_bytes = False
        self._informational = False
        if self.closed or self.transport.is_closing():
            self._end("disconnected")  # closed by the server while idle: nothing was sent
        else:
            self.transport.write(request)
        return self._finished

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # frames are small: send each request at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._now = time.perf_counter()
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._end("bad http")  # an upgrade (101) is no answer to a streamed POST either

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._recorder is not None and self._recorder.stream_complete:
            # A body delimited by the connection's close (no length, not chunked) ends here.
            self._recorder.finished(time.perf_counter())
        self._end("disconnected")

    def cancel(self) -> None:
        """The request was called off: close without counting it as anything."""
        self._recorder = None
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"x-request-id":
            self._request_id = value.decode("latin-1")
        elif lowered == b"content-type":
            self._event_stream = value.lower().startswith(b"text/event-stream")

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            self._informational = True  # the answer itself follows
            return
        self._keep_alive = self._parser.should_keep_alive()
        if self._recorder is not None:
            self._recorder.started(self._parser.get_status_code(), self._request_id,
                                   self._event_stream)

    def on_body(self, body: bytes) -> None:
        recorder = self._recorder
        if recorder is not None and not self._informational:
            recorder.body(body, self._now)
            if recorder.stream_broken:  # nothing more of it can be read for sure
                self._end("stopped reading")

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._request_id, self._event_stream = None, False
            return
        if self._recorder is not None:
            self._recorder.finished(self._now)
        self._end(None)

    def _end(self, failure: str | None) -> None:
        if failure is not None:
            self._keep_alive = False
            if self._recorder is not None:
                self._recorder.failed(failure)
            if failure != "disconnected":
                self.abort()
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)
        self._recorder = None


class Client:
    """Sends streamed requests to one target over a pool of keep-alive connections."""

    def __init__(self, target: Target, headers: dict[str, str]) -> None:
        self.target = target
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def probe(self) -> None:
        """Open one connection (kept for the run), so an unreachable target is found before
        the clock starts; raises the connection's OSError."""
        self._idle.append(await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S))

    async def send(self, recorder: Recorder, body: bytes, timeout_s: float) -> None:
        """Sends one request and records its answer. Its time starts here, connecting
        included, as vLLM's and llmperf's do."""
        request = request_head(self.target, self._headers, len(body)) + body
        if recorder.record.sent is None:
            recorder.record.sent = time.perf_counter()
        deadline = recorder.record.sent + timeout_s
        connection = self._take_idle()
        reused = connection is not None
        if connection is None:
            try:
                left = max(deadline - time.perf_counter(), 0.001)
                connection = await asyncio.wait_for(self._connect(),
                                                    min(CONNECT_TIMEOUT_S, left))
            except (OSError, TimeoutError) as error:
                recorder.failed(connect_error(error))
                return
        recorder.record.new_connection = not reused
        await self._exchange(connection, recorder, request, deadline)
        if reused and not connection.got_bytes and recorder.record.error == "disconnected":
            # The server closed an idle keep-alive connection as this request went out:
            # nothing was answered, so send it again on a fresh connection.
            recorder.record.error = None
            await self.send(recorder, body, timeout_s)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            self._open.discard(connection)
        return None

    async def _exchange(self, connection: _Connection, recorder: Recorder, request: bytes,
                        deadline: float) -> None:
        finished = connection.start(recorder, request)
        try:
            await asyncio.wait_for(finished, max(deadline - time.perf_counter(), 0.001))
        except TimeoutError:
            recorder.failed("timeout")
            connection.abort()
        except asyncio.CancelledError:
            connection.cancel()
            raise
        finally:
            if connection.reusable and recorder.done:
                self._idle.append(connection)
            else:
                self._open.discard(connection)
                connection.abort()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection, self.target.host, self.target.port, ssl=self.target.tls,
            server_hostname=self.target.host if self.target.tls else None)
        self._open.add(connection)
        return connection

    def close(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        self._idle.clear()
