"""Reading a vendor's event stream from the `httpx2.Response` its SDK opened.

The SDK still makes the request (auth, base URL, headers, timeouts, status errors); the
adapters read the body's bytes themselves (`sse_lines`) instead of the SDK's event objects.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator

import aiohttp
import anyio
import httpx2

from providers.sse_lines import SSEEvent, sse_events

Events = AsyncGenerator[list[SSEEvent], None]

# After OpenAI's `[DONE]` the body's end is usually in the same read or the next: reading it
# lets the connection go back to the pool. A server that keeps the body open gets this long,
# as the OpenAI SDK gives it, before the connection is closed instead.
DRAIN_S = 0.1
CLOSE_S = 5.0


def events_of(response: httpx2.Response) -> Events:
    return sse_events(response.aiter_bytes())


async def drain(response: httpx2.Response, events: Events) -> None:
    """Reads (and ignores) the rest of a body whose answer is complete, so an HTTP/1.1
    connection can be reused; a failure here only means it will not be."""
    if response.http_version != "HTTP/1.1" or response.is_closed:
        return
    try:
        with anyio.move_on_after(DRAIN_S):
            async for _ in events:
                pass
    except (httpx2.RequestError, aiohttp.ClientError, ssl.SSLError, anyio.EndOfStream, OSError):
        pass


async def close(response: httpx2.Response, events: Events) -> None:
    """Releases the response: back to the pool when it was read to its end, else its
    connection is closed, which is how the vendor learns to stop. Shielded and bounded, for a
    stream unwinding inside a cancelled scope."""
    with anyio.move_on_after(CLOSE_S, shield=True):
        await events.aclose()
        await response.aclose()
