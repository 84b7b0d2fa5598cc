"""AWS event-stream messages (`application/vnd.amazon.eventstream`) split from a byte stream.

botocore decodes each message in Python a field at a time (each header through a table of
unpack functions, the buffer re-sliced after each), then parses its JSON payload by the API's
shapes: most of the Bedrock adapter's CPU per token. The checks are botocore's, with its
exceptions, so a broken frame is reported as before: the prelude's and the message's CRC32, the
headers' and payload's length limits, a header named twice. A header of a type the format
does not define, or one running past the headers' length, is a broken frame too (botocore
raises a `KeyError` or `struct.error` there).

A message is a prelude (total length, headers length, prelude CRC32), the headers, the payload
and a CRC32 of everything before it; all integers big-endian. Header names and string values
are kept as bytes: the reader compares them with the few it knows.
"""

from __future__ import annotations

import zlib
from struct import Struct

from botocore.eventstream import (
    ChecksumMismatch,
    DuplicateHeader,
    InvalidHeadersLength,
    InvalidPayloadLength,
    ParserError,
)

# The header names and string values, by name; other types of value are kept as None. Not to
# be changed: a message's may be shared with others that had the same headers.
Headers = dict[bytes, bytes | None]
Message = tuple[Headers, bytes]

_PRELUDE = Struct("!III")
_PRELUDE_LENGTH = 12
_CRC_LENGTH = 4
_MAX_HEADERS_LENGTH = 128 * 1024  # botocore's limits
_MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
_STRING = 7
_BYTES = 6
# The size of each fixed-size type of header value, by type: true, false, byte, short,
# integer, long, (byte array and string have a length), timestamp, UUID.
_FIXED_SIZE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class FrameParser:
    """Feed it each read in order, then call `end()`; a message split across reads comes out
    whole. As botocore's, the messages before a broken one are handed over first: it raises
    on the next read, or at the end."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Message]:
        buffer = self._buffer + chunk if self._buffer else chunk
        messages: list[Message] = []
        start = 0
        try:
            while len(buffer) - start >= _PRELUDE_LENGTH:
                total = _whole_length(buffer, start)
                if len(buffer) - start < total:
                    break
                messages.append(_message(buffer, start, total))
                start += total
        except ParserError:
            if not messages:
                raise
        self._buffer = buffer[start:]
        return messages

    def end(self) -> None:
        """Raises for a broken message left over; an incomplete one is dropped, as by
        botocore (the caller sees the answer end unfinished)."""
        if self._buffer:
            self.feed(b"")


def _whole_length(buffer: bytes, start: int) -> int:
    """The length of the message the prelude at `start` announces, once checked."""
    total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer, start)
    _check(prelude_crc, zlib.crc32(buffer[start:start + 8]))
    if headers_length > _MAX_HEADERS_LENGTH:
        raise InvalidHeadersLength(headers_length)
    payload_length = total - headers_length - _PRELUDE_LENGTH - _CRC_LENGTH
    if payload_length > _MAX_PAYLOAD_LENGTH or payload_length < 0:
        raise InvalidPayloadLength(payload_length)
    return int(total)


def _message(buffer: bytes, start: int, total: int) -> Message:
    end = start + total - _CRC_LENGTH
    message = buffer[start:end]
    _check(int.from_bytes(buffer[end:end + _CRC_LENGTH], "big"), zlib.crc32(message))
    headers_end = _PRELUDE_LENGTH + int.from_bytes(message[4:8], "big")
    raw = message[_PRELUDE_LENGTH:headers_end]
    headers = _SEEN.get(raw)
    if headers is None:
        headers = _headers(raw, 0, len(raw))
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[raw] = headers
    return headers, message[headers_end:]


# The headers of the messages seen last, parsed: a stream repeats a few sets (the same three for
# every token), so most messages' headers are one lookup. Shared and read-only.
_SEEN: dict[bytes, Headers] = {}
_SEEN_MAX = 64


def _check(expected: int, calculated: int) -> None:
    if expected != calculated:
        raise ChecksumMismatch(expected, calculated)


def _headers(message: bytes, at: int, end: int) -> Headers:
    headers: Headers = {}
    while at < end:
        name_end = at + 1 + message[at]
        if name_end >= end:
            raise ParserError("a header runs past the headers")
        name = message[at + 1:name_end]
        kind = message[name_end]
        at = name_end + 1
        value: bytes | None = None
        if kind in (_STRING, _BYTES):
            value_end = at + 2 + int.from_bytes(message[at:at + 2], "big")
            value = message[at + 2:value_end]
        elif kind in _FIXED_SIZE:
            value_end = at + _FIXED_SIZE[kind]
        else:
            raise ParserError(f"a header of unknown type {kind}")
        if value_end > end:
            raise ParserError("a header runs past the headers")
        if name in headers:
            raise DuplicateHeader(name.decode("utf-8", "replace"))
        headers[name] = value if kind == _STRING else None
        at = value_end
    return headers
