"""sse-starlette's `EventSourceResponse` with its send timeout kept, but not a timer a frame.

sse-starlette bounds every send with `anyio.move_on_after`: a cancel scope and a loop timer for
each frame, about 20 µs a frame on the benchmark's machine, a sixth of what a relayed token
costs the service in all. A send to uvicorn returns at once unless the client's buffers are
full. So each send here runs bare, noting when it began, and one timer per stream (re-armed
at most once per `send_timeout`) finds a send that has waited that long: it cancels the
stream's sending, which then raises `SendTimeoutError`, as sse-starlette's own timeout does,
for the caller to treat as a reader that stopped reading.
"""

from __future__ import annotations

import asyncio

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Send


class EventStreamResponse(EventSourceResponse):
    _watch: _SendWatch | None = None

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        watch = self._watch
        if watch is None:  # a send outside the stream (a HEAD request's): the library's own
            await super()._send_with_timeout(send, message)
            return
        watch.waiting_since = watch.loop.time()
        try:
            await send(message)
        finally:
            watch.waiting_since = None

    async def _stream_response(self, send: Send) -> None:
        if self.send_timeout is None:
            await super()._stream_response(send)
            return
        with anyio.CancelScope() as sending:
            watch = self._watch = _SendWatch(self.send_timeout, sending)
            try:
                await super()._stream_response(send)
            finally:
                watch.stop()
                self._watch = None
        if watch.stalled:
            raise SendTimeoutError()


class _SendWatch:
    """Cancels `sending` once a send has waited `timeout_s`."""

    def __init__(self, timeout_s: float, sending: anyio.CancelScope) -> None:
        self.loop = asyncio.get_running_loop()
        self.waiting_since: float | None = None
        self.stalled = False
        self._timeout_s = timeout_s
        self._sending = sending
        self._timer = self.loop.call_later(timeout_s, self._check)

    def _check(self) -> None:
        since = self.waiting_since
        now = self.loop.time()
        if since is not None and now - since >= self._timeout_s:
            self.stalled = True
            self._sending.cancel()
            return
        # The next send to check began no earlier than now: look again when it could be late.
        self._timer = self.loop.call_at((now if since is None else since) + self._timeout_s,
                                        self._check)

    def stop(self) -> None:
        self._timer.cancel()
