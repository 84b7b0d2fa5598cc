"""The SSE parser the OpenAI and Anthropic adapters read their vendors' streams with.

The property: however a valid stream is cut into reads, and whichever line ends it uses, the
events are those it was written with.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.sse_lines import SSEEvent, SSEParser, sse_events

ENDS = ("\n", "\r\n", "\r")
# Field values: any text without a line end (surrogates cannot be encoded).
VALUE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                max_size=12)


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.end()


def cut(data: bytes, at: list[int]) -> list[bytes]:
    """`data` in reads ending at the given offsets (some of them empty reads)."""
    bounds = [0, *sorted(at), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def lines_of_an_event(draw: st.DrawFn) -> tuple[list[str], SSEEvent | None]:
    """An event's lines (comments, ignored fields and blank lines before it included), and
    the event they stand for."""
    lines = [""] * draw(st.integers(0, 2))
    name: str | None = None
    data: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["data", "data", "event", "comment", "id", "retry",
                                     "unknown", "bare data"]))
        value = draw(VALUE)
        if kind == "data":
            # One space after the colon is dropped, so a value starting with one needs it.
            space = " " if value.startswith(" ") else draw(st.sampled_from(["", " "]))
            lines.append(f"data:{space}{value}")
            data.append(value)
        elif kind == "bare data":  # a field name alone is a field with an empty value
            lines.append("data")
            data.append("")
        elif kind == "event":
            lines.append(f"event: {value}")
            name = value
        elif kind == "comment":
            lines.append(f":{value}")
        else:
            lines.append(f"{kind}: {value}")
    if not data and not name:
        return lines, None
    return lines, (name.encode() if name else None,
                   "\n".join(data).encode() if data else None)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent], list[int]]:
    """A stream of events with a line end of any kind after each line; the last event may
    end without its blank line, or even without its line end. With the events, how many
    bytes of the stream each needs before it is due: up to the first byte of the line end of
    its blank line (a CR ends a line at once, whether an LF follows or not)."""
    events: list[SSEEvent] = []
    due: list[int] = []
    text = b""
    previous_end = ""
    drawn = draw(st.lists(lines_of_an_event(), min_size=1, max_size=6))
    for index, (lines, event) in enumerate(drawn):
        last = index == len(drawn) - 1
        unterminated = last and draw(st.booleans())
        for number, line in enumerate([*lines, ""]):
            if unterminated and number == len(lines):
                break  # no blank line after the last event
            # A CR then an LF is one line end: a blank line right after a CR ends with CR.
            choices = ("\r", "\r\n") if previous_end == "\r" and not line else ENDS
            end = draw(st.sampled_from(choices))
            if unterminated and number == len(lines) - 1 and draw(st.booleans()):
                end = ""
            text += line.encode()
            if number == len(lines) and event is not None:
                due.append(len(text) + 1)
            text += end.encode()
            previous_end = end
        if event is not None:
            events.append(event)
    return text, events, due


Stream = tuple[bytes, list[SSEEvent], list[int]]


@settings(max_examples=400)
@given(streams(), st.data())
def test_any_split_into_reads_gives_the_events_of_the_whole(stream: Stream,
                                                           data: st.DataObject) -> None:
    raw, events, _ = stream
    assert parse([raw]) == events
    at = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert parse(cut(raw, at)) == events


@settings(max_examples=400)
@given(streams(), st.data())
def test_each_event_comes_out_of_the_read_that_completes_it(stream: Stream,
                                                            data: st.DataObject) -> None:
    """Not later: a token held back until the next read would reach the caller late."""
    raw, events, due = stream
    at = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    parser = SSEParser()
    out: list[SSEEvent] = []
    read = 0
    for chunk in cut(raw, at):
        out += parser.feed(chunk)
        read += len(chunk)
        assert out == events[:sum(1 for needed in due if needed <= read)]
    assert out + parser.end() == events


@given(streams())
def test_a_read_per_byte_gives_the_same_events(stream: Stream) -> None:
    raw, events, _ = stream
    assert parse([raw[i:i + 1] for i in range(len(raw))]) == events


def test_the_usual_one_line_event() -> None:
    assert parse([b'data: {"a":1}\n\n']) == [(None, b'{"a":1}')]


def test_a_named_event_keeps_its_name() -> None:
    assert parse([b"event: ping\ndata: {}\n\n"]) == [(b"ping", b"{}")]


def test_the_lines_of_a_data_field_are_joined_with_lf() -> None:
    assert parse([b"data: a\ndata:b\r\ndata\rdata:  c\n\n"]) == [(None, b"a\nb\n\n c")]


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    assert parse([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [(None, b"a"), (None, b"b")]


def test_cr_alone_ends_lines() -> None:
    assert parse([b"event: x\rdata: 1\r\rdata: 2\r\r"]) == [(b"x", b"1"), (None, b"2")]


def test_a_blank_line_split_from_its_event_still_ends_it() -> None:
    assert parse([b"data: a\n", b"\n", b"data: b\n", b"\n"]) == [(None, b"a"), (None, b"b")]


def test_comments_ids_and_unknown_fields_are_skipped() -> None:
    raw = b": keep-alive\n\nid: 7\nretry: 100\n\nfoo: bar\n\n:x\ndata: 1\nid: 8\n\n"
    assert parse([raw]) == [(None, b"1")]


def test_an_event_with_a_name_and_no_data_is_handed_over() -> None:
    """The SDKs dispatch it (Anthropic's `error` event may come so); the reader decides."""
    assert parse([b"event: error\n\n"]) == [(b"error", None)]
    assert parse([b"event:\n\n"]) == []


def test_the_last_event_without_its_blank_line_is_handed_over_at_the_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n\ndata: 2\n") == [(None, b"1")]
    assert parser.end() == [(None, b"2")]
    assert parse([b"data: 3"]) == [(None, b"3")]
    assert parse([b"data: 4\r"]) == [(None, b"4")]


def test_an_event_larger_than_many_reads() -> None:
    value = b"x" * 100_000
    raw = b"data: " + value + b"\n\n"
    assert parse([raw[i:i + 1000] for i in range(0, len(raw), 1000)]) == [(None, value)]


def test_bytes_that_are_not_utf_8_are_left_to_the_json_parser() -> None:
    assert parse([b'data: {"a": "\xff"}\n\n']) == [(None, b'{"a": "\xff"}')]


async def test_the_async_reader_gives_a_list_per_read_and_closes_the_body() -> None:
    closed = anyio.Event()

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            for chunk in (b"data: 1\n\nda", b"ta: 2\n\ndata: 3\n\n", b": ping\n\n", b"data: 4"):
                yield chunk
        finally:
            closed.set()

    batches = [batch async for batch in sse_events(body())]
    assert batches == [[(None, b"1")], [(None, b"2"), (None, b"3")], [(None, b"4")]]
    assert closed.is_set()

    closed = anyio.Event()
    events = sse_events(body())
    assert await anext(events) == [(None, b"1")]
    await events.aclose()  # left early: the body is closed too
    assert closed.is_set()
