"""The SSE response's send timeout without a timer per frame (app/event_stream.py): a send
that waits `send_timeout` ends the stream with `SendTimeoutError`, as sse-starlette's own
does; a stream that keeps flowing is never cut, however long it lasts. The ASGI `send` is a
stand-in here; tests/app/test_stalled_client.py and test_connections.py hold the same over
real sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message

from app.event_stream import EventStreamResponse

SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def frames(count: int, gap_s: float) -> AsyncIterator[bytes]:
    for index in range(count):
        await anyio.sleep(gap_s)
        yield b"data: %d\n\n" % index


async def never_disconnects() -> Message:
    await anyio.sleep_forever()
    raise AssertionError


async def test_a_stream_longer_than_the_send_timeout_is_never_cut() -> None:
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    response = EventStreamResponse(frames(30, 0.02), ping=0, send_timeout=0.1)
    started = time.monotonic()
    await response(SCOPE, never_disconnects, send)
    assert time.monotonic() - started > 0.5  # six send timeouts, each send quick
    assert bodies[:-1] == [b"data: %d\n\n" % index for index in range(30)]
    assert bodies[-1] == b""  # the stream's end


@pytest.mark.parametrize("quick_sends", [0, 5])
async def test_a_send_that_waits_the_send_timeout_ends_the_stream(quick_sends: int) -> None:
    sent: list[bytes] = []
    blocked_at: list[float] = []

    async def send(message: Message) -> None:
        if message["type"] != "http.response.body":
            return
        if len(sent) == quick_sends:  # the client's buffers are full from here on
            blocked_at.append(time.monotonic())
            await anyio.sleep_forever()
        sent.append(message["body"])

    response = EventStreamResponse(frames(1000, 0.03), ping=0, send_timeout=0.2)
    with pytest.raises(SendTimeoutError):
        await response(SCOPE, never_disconnects, send)
    waited = time.monotonic() - blocked_at[0]
    # From the send that waited, not from the stream's start or a quick send before it.
    assert 0.2 <= waited < 0.35, waited
    assert len(sent) == quick_sends
