"""AWS event-stream message encoding (`application/vnd.amazon.eventstream`).

A message is a prelude (total length, headers length, prelude CRC32), the headers, the
payload and a CRC32 of everything before it; all integers big-endian.
"""

from __future__ import annotations

import zlib

_STRING = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    header_bytes = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(header_bytes).to_bytes(4, "big")
    message = prelude + _crc(prelude) + header_bytes + payload
    return message + _crc(message)


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (len(raw_name).to_bytes(1, "big") + raw_name + _STRING.to_bytes(1, "big")
            + len(raw_value).to_bytes(2, "big") + raw_value)


def _crc(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def event(event_type: str, payload: bytes) -> bytes:
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"}, payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    return encode_message({":exception-type": exception_type,
                           ":content-type": "application/json",
                           ":message-type": "exception"}, payload)
