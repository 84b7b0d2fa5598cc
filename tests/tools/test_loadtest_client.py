"""The load tester's HTTP client against raw servers on loopback that answer the ways real
servers do: chunked or not, closing their connections, breaking the protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from tools.loadtest_http import Client, Target
from tools.loadtest_record import Recorder, RequestRecord
from tools.loadtest_sse import DIALECTS

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FRAMES = [b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
          b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n',
          b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n', b"data: [DONE]\n\n"]
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Request-ID: req_raw\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """Reads one request (head and body) and returns its head; None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return head


@dataclass
class Seen:
    """What a raw server saw: when it accepted each connection, each request's head."""

    url: str = ""
    accepted: list[float] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def raw_server(answer: Answer, path: str = "/v1/chat/completions") -> AsyncIterator[Seen]:
    """A server on 127.0.0.1 answering each request with `answer`."""
    seen = Seen()
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            handlers.add(task)
        seen.accepted.append(time.perf_counter())
        try:
            while (head := await read_request(reader)) is not None:
                seen.heads.append(head)
                await answer(reader, writer)
                if writer.is_closing():
                    break
        except ConnectionError:
            pass  # the client cut it: what these tests are about
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    seen.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"
    try:
        yield seen
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def send(client: Client, index: int = 0, timeout_s: float = 5.0) -> RequestRecord:
    record = RequestRecord(index, 0, False, due=time.perf_counter())
    await client.send(Recorder(record, DIALECTS["openai"]), b"{}", timeout_s)
    return record


async def requests_to(answer: Answer, count: int = 1, timeout_s: float = 5.0,
                      path: str = "/v1/chat/completions") -> tuple[list[RequestRecord], Seen]:
    """`count` requests one after the other, over one client, to a server answering with
    `answer`; their records and what the server saw."""
    async with raw_server(answer, path) as seen:
        client = Client(Target.parse(seen.url), {})
        try:
            records = [await send(client, index, timeout_s) for index in range(count)]
        finally:
            client.close()
    return records, seen


def chunked(frames: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(frame), frame) for frame in frames) + b"0\r\n\r\n"


async def test_a_chunked_stream_is_read_frame_by_frame_over_one_kept_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for frame in FRAMES:
            writer.write(b"%x\r\n%b\r\n" % (len(frame), frame))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    records, seen = await requests_to(answer, 3)
    assert all(r.ok for r in records), [r.error for r in records]
    first = records[0]
    assert (first.text_frames, first.output_tokens, first.request_id) == (2, 2, "req_raw")
    assert first.ttft is not None and 0 <= first.ttft < 0.05
    assert len(first.gaps) == 1 and 0.015 <= first.gaps[0] < 0.1
    assert len(seen.accepted) == 1 and [r.new_connection for r in records] == [True, False, False]


async def test_a_server_closing_its_kept_connections_costs_no_request() -> None:
    body = b"".join(FRAMES)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A keep-alive response, and then the server closes the connection anyway, as one
        # does when its idle timeout ends: seen by the client while idle.
        writer.write(SSE_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        writer.close()

    async with raw_server(answer) as seen:
        client = Client(Target.parse(seen.url), {})
        records = []
        for index in range(4):
            records.append(await send(client, index))
            await asyncio.sleep(0.02)
        client.close()
    assert [r.error for r in records] == [None] * 4
    assert len(seen.accepted) == 4


async def test_a_request_lost_as_the_server_closes_the_connection_is_sent_again() -> None:
    body = b"".join(FRAMES)
    answered: set[int] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The idle timeout ends just as the next request arrives: closed without a byte.
        if id(writer) in answered:
            writer.close()
            return
        answered.add(id(writer))
        writer.write(SSE_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()

    records, seen = await requests_to(answer, 3)
    assert [r.error for r in records] == [None] * 3
    assert len(seen.accepted) == 3


async def test_a_body_ended_by_closing_the_connection_is_complete_after_its_last_frame() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Connection: close\r\n\r\n" + b"".join(FRAMES))
        await writer.drain()
        writer.close()

    (record,), _ = await requests_to(answer)
    assert record.ok and record.text_frames == 2


async def test_what_is_not_a_good_stream_fails_with_its_reason() -> None:
    chunked_sse = SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    answers = [
        ("bad http", b"HTTP/1.1 2OO OK\r\n\r\n"),
        ("bad http", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n"),
        ("not an event stream", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 2\r\n\r\n{}"),
        ("truncated", chunked_sse + chunked(FRAMES[:2])),
        ("disconnected", chunked_sse + chunked(FRAMES[:2])[:-5]),
        ("malformed frame: a frame that is not JSON",
         chunked_sse + chunked([b"data: {nope\n\n", FRAMES[-1]])),
        ("http 401 invalid_api_key", b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                                     b"application/json\r\nContent-Length: 51\r\n\r\n"
                                     b'{"error":{"code":"invalid_api_key","message":"no"}}'),
    ]
    for reason, response in answers:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         response: bytes = response) -> None:
            writer.write(response)
            await writer.drain()
            writer.close()

        (record,), _ = await requests_to(answer)
        assert (record.ok, record.error) == (False, reason)


async def test_a_stream_ending_in_an_error_frame_keeps_its_connection() -> None:
    failing = [FRAMES[0], b'data: {"error":{"type":"server_error","message":"x"}}\n\n']

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(failing))

    records, seen = await requests_to(answer, 3)
    assert [r.error for r in records] == ["stream server_error"] * 3
    assert len(seen.accepted) == 1  # a failed answer is no reason to connect again


async def test_a_request_past_its_timeout_is_cut_and_counted() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(FRAMES[:1])[:-5])
        await writer.drain()
        await reader.read()  # until the client gives up and closes

    started = time.perf_counter()
    (record,), _ = await requests_to(answer, timeout_s=0.3)
    assert record.error == "timeout" and record.text_frames == 1
    assert 0.3 <= time.perf_counter() - started < 1.0


async def test_informational_answers_are_skipped_for_the_answer_after_them() -> None:
    body = b"".join(FRAMES)
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(SSE_HEAD.replace(b"req_raw", b"req_%d" % served)
                     + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))

    records, seen = await requests_to(answer, 3)
    assert [(r.error, r.status, r.request_id) for r in records] == [
        (None, 200, "req_1"), (None, 200, "req_2"), (None, 200, "req_3")]
    assert all(r.text_frames == 2 for r in records) and len(seen.accepted) == 1


async def test_an_endless_event_fails_its_request_without_stalling_the_client() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"data: " + b"x" * 65_536
        for _ in range(40):  # 2.6 MB of one event, never ended by a blank line
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            piece = b"x" * 65_536

    started = time.perf_counter()
    (record,), _ = await requests_to(answer)
    assert record.error == "malformed frame: an event longer than 1048576 bytes"
    assert time.perf_counter() - started < 2


async def test_a_requests_time_counts_from_before_its_connection_is_made() -> None:
    body = b"".join(FRAMES)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))

    (record,), seen = await requests_to(answer)
    assert record.ok and record.new_connection
    assert record.sent is not None and record.sent < seen.accepted[0]


async def test_a_path_in_any_script_is_sent_percent_encoded() -> None:
    body = b"".join(FRAMES)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))

    (record,), seen = await requests_to(answer, path="/чат/v1/chat/completions?q=a b")
    assert record.ok
    assert [head.split(b"\r\n")[0] for head in seen.heads] == [
        b"POST /%D1%87%D0%B0%D1%82/v1/chat/completions?q=a%20b HTTP/1.1"]
