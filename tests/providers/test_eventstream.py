"""The AWS event-stream decoder the Bedrock adapter reads its answer with, against botocore's
own decoder on the same bytes."""

from __future__ import annotations

import itertools
import uuid
import zlib

import pytest
from botocore.eventstream import (
    ChecksumMismatch,
    DuplicateHeader,
    EventStreamBuffer,
    InvalidHeadersLength,
    InvalidPayloadLength,
    ParserError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.eventstream import FrameParser, Message
from tests.upstreams.eventstream import encode_message, event, exception


def frame(header_bytes: bytes, payload: bytes) -> bytes:
    """A message with headers already encoded (of any type), its CRCs right."""
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(header_bytes).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + header_bytes + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def header(name: str, kind: int, value: bytes) -> bytes:
    return len(name).to_bytes(1, "big") + name.encode() + kind.to_bytes(1, "big") + value


EVERY_TYPE = b"".join([
    header("true", 0, b""), header("false", 1, b""), header("byte", 2, b"\x07"),
    header("short", 3, b"\x00\x07"), header("int", 4, (7).to_bytes(4, "big")),
    header("long", 5, (7).to_bytes(8, "big")), header("bytes", 6, b"\x00\x02\x01\x02"),
    header(":event-type", 7, b"\x00\x11contentBlockDelta"),
    header("timestamp", 8, (1_700_000_000_000).to_bytes(8, "big")),
    header("uuid", 9, uuid.uuid4().bytes),
])


def parse(chunks: list[bytes]) -> list[Message]:
    parser = FrameParser()
    messages = [message for chunk in chunks for message in parser.feed(chunk)]
    parser.end()
    return messages


def botocore_parse(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


PAYLOADS = st.binary(max_size=40)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    payloads = draw(st.lists(PAYLOADS, min_size=1, max_size=5))
    return b"".join(event("contentBlockDelta", payload) for payload in payloads), payloads


@settings(max_examples=200)
@given(streams(), st.lists(st.integers(0, 2000), max_size=10))
def test_any_split_into_reads_gives_the_messages_of_the_whole(
        stream: tuple[bytes, list[bytes]], at: list[int]) -> None:
    raw, payloads = stream
    bounds = [0, *sorted(min(cut, len(raw)) for cut in at), len(raw)]
    messages = parse([raw[start:end] for start, end in itertools.pairwise(bounds)])
    assert [payload for _, payload in messages] == payloads
    assert all(headers[b":event-type"] == b"contentBlockDelta" for headers, _ in messages)
    assert [payload for _, payload in botocore_parse(raw)] == payloads


def test_every_type_of_header_value_is_read_past_and_strings_are_kept() -> None:
    raw = frame(EVERY_TYPE, b'{"delta":{"text":"hi"}}')
    ((headers, payload),) = parse([raw])
    assert payload == b'{"delta":{"text":"hi"}}'
    assert headers[b":event-type"] == b"contentBlockDelta"
    assert list(headers) == [name.encode() for name in botocore_parse(raw)[0][0]]


def test_an_exception_message_keeps_its_headers() -> None:
    ((headers, payload),) = parse([exception("throttlingException", b'{"message":"x"}')])
    assert headers[b":message-type"] == b"exception"
    assert headers[b":exception-type"] == b"throttlingException"
    assert payload == b'{"message":"x"}'


def test_a_message_split_across_reads_comes_out_once_whole() -> None:
    raw = event("messageStop", b'{"stopReason":"end_turn"}')
    parser = FrameParser()
    assert parser.feed(raw[:5]) == [] and parser.feed(raw[5:20]) == []
    assert parser.feed(raw[20:]) == [({b":event-type": b"messageStop",
                                       b":content-type": b"application/json",
                                       b":message-type": b"event"},
                                      b'{"stopReason":"end_turn"}')]


def corrupt(raw: bytes, at: int) -> bytes:
    broken = bytearray(raw)
    broken[at] ^= 0xFF
    return bytes(broken)


@pytest.mark.parametrize("at", [-1, 20, 9], ids=["message-crc", "headers", "prelude-crc"])
def test_a_checksum_that_does_not_match_is_botocores_error(at: int) -> None:
    raw = corrupt(event("contentBlockDelta", b"{}"), at)
    with pytest.raises(ChecksumMismatch):
        parse([raw])
    with pytest.raises(ChecksumMismatch):
        botocore_parse(raw)


def test_the_messages_before_a_broken_one_come_out_first() -> None:
    good = event("contentBlockDelta", b'{"n":1}')
    broken = corrupt(event("contentBlockDelta", b'{"n":2}'), -1)
    parser = FrameParser()
    assert [payload for _, payload in parser.feed(good + broken)] == [b'{"n":1}']
    with pytest.raises(ChecksumMismatch):
        parser.end()
    parser = FrameParser()
    parser.feed(good + broken)
    with pytest.raises(ChecksumMismatch):
        parser.feed(b"")


def test_an_incomplete_message_at_the_end_is_dropped_as_botocore_does() -> None:
    raw = event("contentBlockDelta", b"{}")
    parser = FrameParser()
    assert parser.feed(raw + raw[:30]) == [({b":event-type": b"contentBlockDelta",
                                             b":content-type": b"application/json",
                                             b":message-type": b"event"}, b"{}")]
    parser.end()


def test_lengths_past_botocores_limits_are_refused() -> None:
    def prelude(total: int, headers: int) -> bytes:
        head = total.to_bytes(4, "big") + headers.to_bytes(4, "big")
        return head + zlib.crc32(head).to_bytes(4, "big")

    with pytest.raises(InvalidHeadersLength):
        parse([prelude(200_000, 131_073)])
    with pytest.raises(InvalidPayloadLength):
        parse([prelude(25 * 1024 * 1024 + 100, 10)])
    with pytest.raises(InvalidPayloadLength):  # shorter than its own headers
        parse([prelude(20, 10)])


@pytest.mark.parametrize("headers", [
    pytest.param(header("x", 10, b""), id="unknown-type"),
    pytest.param(header("x", 7, b"\x00\x09abc"), id="string-past-the-headers"),
    pytest.param(header("x", 5, b"\x00"), id="long-past-the-headers"),
    pytest.param(b"\x05ab", id="name-past-the-headers"),
])
def test_headers_that_do_not_parse_are_a_broken_frame(headers: bytes) -> None:
    with pytest.raises(ParserError):
        parse([frame(headers, b"{}")])


def test_a_header_named_twice_is_botocores_error() -> None:
    twice = header("a", 7, b"\x00\x01x") + header("a", 7, b"\x00\x01y")
    with pytest.raises(DuplicateHeader):
        parse([frame(twice, b"")])


def test_the_fake_bedrock_frames_are_what_botocore_reads() -> None:
    raw = encode_message({":event-type": "metadata", ":message-type": "event"}, b"{}")
    assert botocore_parse(raw) == [({":event-type": "metadata", ":message-type": "event"},
                                     b"{}")]
    assert parse([raw]) == [({b":event-type": b"metadata", b":message-type": b"event"}, b"{}")]
