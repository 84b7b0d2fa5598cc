"""Server-sent events split incrementally from the bytes of a streamed HTTP response.

The vendors' SDKs decode each line to text, build an event object and run `json.loads` on its
data; at a token per event that is most of an adapter's CPU. Here a read's bytes are split
into events with a few `bytes` methods (C loops), and the data is handed over as bytes for
`orjson`, which also checks the UTF-8.

Lines end in LF, CRLF or CR, and a read may end anywhere, even between the CR and LF of one
line end. Only the fields the adapters read are kept: `event` and `data` (its lines joined by
LF); `id` and `retry` are skipped, as are comments. An event is handed over when it has an
`event` or a `data` field, as the SDKs do (the OpenAI SDK also took a block of `id` or
`retry` alone for an event with empty data, which it then failed to parse as JSON). One left
unterminated when the body ends cleanly is handed over too (the SDKs drop it), so a server
that closes the body right after its last line is not taken for one that broke off.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

# The event's name (None when it has none, or an empty one) and its data (None when it has no
# `data` field at all).
SSEEvent = tuple[bytes | None, bytes | None]

_DATA = b"data: "


class SSEParser:
    """Feed it each read in order, then `end()` once the body is over."""

    __slots__ = ("_cr", "_pending")

    def __init__(self) -> None:
        # What came after the last complete event, LF-normalised: a partial event, in pieces,
        # so one larger than a read is joined once rather than on every read.
        self._pending: list[bytes] = []
        # The last read ended in CR: an LF opening the next one belongs to that line end.
        self._cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        # Nearly every read of a paced stream is one whole `data: ` line and its blank line.
        if (chunk.find(b"\n") == len(chunk) - 2 and chunk[-1:] == b"\n" and chunk[:6] == _DATA
                and not self._pending and not self._cr and b"\r" not in chunk):
            return [(None, chunk[6:-2])]
        if not chunk:
            return []
        if self._cr or b"\r" in chunk:
            chunk = self._normalised(chunk)
        pending = self._pending
        if b"\n\n" not in chunk and not (pending and chunk[:1] == b"\n"
                                         and pending[-1][-1:] == b"\n"):
            if chunk:
                pending.append(chunk)
            return []
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
        end = chunk.rfind(b"\n\n")
        if end + 2 < len(chunk):
            pending.append(chunk[end + 2:])
        return _events(chunk[:end])

    def end(self) -> list[SSEEvent]:
        """The event the body ended in without its blank line, if any."""
        rest = b"".join(self._pending)
        self._pending.clear()
        self._cr = False
        return _events(rest) if rest else []

    def _normalised(self, chunk: bytes) -> bytes:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _events(text: bytes) -> list[SSEEvent]:
    """The events of LF-normalised text made of whole events (the last one's blank line
    left off)."""
    events: list[SSEEvent] = []
    for block in text.split(b"\n\n"):
        # Nearly every event is one `data: ` line.
        if block[:6] == _DATA and b"\n" not in block:
            events.append((None, block[6:]))
            continue
        event = _event(block)
        if event is not None:
            events.append(event)
    return events


def _event(block: bytes) -> SSEEvent | None:
    name: bytes | None = None
    data: list[bytes] | None = None
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":  # blank lines before the event; comments
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if data is None:
                data = [value]
            else:
                data.append(value)
        elif field == b"event":
            name = value or None
    if data is None:
        return None if name is None else (name, None)
    return name, data[0] if len(data) == 1 else b"\n".join(data)


async def sse_events(chunks: AsyncGenerator[bytes, None]
                     ) -> AsyncGenerator[list[SSEEvent], None]:
    """The events of a body's reads, a list for each read that completed any (one async step
    per read, not per event); closing it closes `chunks`."""
    parser = SSEParser()
    try:
        async for chunk in chunks:
            events = parser.feed(chunk)
            if events:
                yield events
        events = parser.end()
        if events:
            yield events
    finally:
        await chunks.aclose()
