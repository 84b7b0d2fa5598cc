"""The load tester's HTTP client against raw servers on loopback that answer the ways real
servers do: chunked or not, closing their connections, breaking the protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from tools.loadtest_http import Client, Target
from tools.loadtest_record import Recorder, RequestRecord
from tools.loadtest_sse import DIALECTS

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FRAMES = [b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
          b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n',
          b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n', b"data: [DONE]\n\n"]
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Request-ID: req_raw\r\n"


async def read_request(reader: asyncio.StreamReader) -> bool:
    """Reads one request (head and body); False when the client closed instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return True


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 answering each request with `answer`; yields its URL and a list
    that counts the connections it accepted."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while await read_request(reader):
                await answer(reader, writer)
                if writer.is_closing():
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", connections
    finally:
        server.close()
        await server.wait_closed()


async def send(client: Client, index: int = 0, timeout_s: float = 5.0) -> RequestRecord:
    record = RequestRecord(index, 0, False, due=time.perf_counter())
    await client.send(Recorder(record, DIALECTS["openai"]), b"{}", timeout_s)
    return record


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

    async with raw_server(answer) as (url, connections):
        client = Client(Target.parse(url), {})
        records = [await send(client, i) for i in range(3)]
        client.close()
    assert all(r.ok for r in records), [r.error for r in records]
    first = records[0]
    assert (first.text_frames, first.output_tokens, first.request_id) == (2, 2, "req_raw")
    assert first.ttft is not None and 0 <= first.ttft < 0.05
    assert len(first.gaps) == 1 and 0.015 <= first.gaps[0] < 0.1
    assert len(connections) == 1 and [r.new_connection for r in records] == [True, False, False]


async def test_a_server_closing_its_kept_connections_costs_no_request() -> None:
    body = b"".join(FRAMES)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A keep-alive response, and then the server closes the connection anyway, as one
        # does when its idle timeout ends: seen by the client while idle.
        writer.write(SSE_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        writer.close()

    async with raw_server(answer) as (url, connections):
        client = Client(Target.parse(url), {})
        records = []
        for index in range(4):
            records.append(await send(client, index))
            await asyncio.sleep(0.02)
        client.close()
    assert [r.error for r in records] == [None] * 4
    assert len(connections) == 4


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

    async with raw_server(answer) as (url, connections):
        client = Client(Target.parse(url), {})
        records = [await send(client, index) for index in range(3)]
        client.close()
    assert [r.error for r in records] == [None] * 3
    assert len(connections) == 3


async def test_a_body_ended_by_closing_the_connection_is_complete_after_its_last_frame() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Connection: close\r\n\r\n" + b"".join(FRAMES))
        await writer.drain()
        writer.close()

    async with raw_server(answer) as (url, _):
        client = Client(Target.parse(url), {})
        record = await send(client)
        client.close()
    assert record.ok and record.text_frames == 2


async def test_what_is_not_a_good_stream_fails_with_its_reason() -> None:
    answers = {
        "bad http": b"HTTP/1.1 2OO OK\r\n\r\n",
        "not an event stream": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 2\r\n\r\n{}",
        "truncated": SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(FRAMES[:2]),
        "disconnected": SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                        + chunked(FRAMES[:2])[:-5],
        "malformed frame: a frame that is not JSON": SSE_HEAD + b"Transfer-Encoding: chunked"
                        b"\r\n\r\n" + chunked([b"data: {nope\n\n", FRAMES[-1]]),
        "http 401 invalid_api_key": b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                        b"application/json\r\nContent-Length: 51\r\n\r\n"
                        b'{"error":{"code":"invalid_api_key","message":"no"}}',
    }
    for reason, response in answers.items():
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         response: bytes = response) -> None:
            writer.write(response)
            await writer.drain()
            writer.close()

        async with raw_server(answer) as (url, _):
            client = Client(Target.parse(url), {})
            record = await send(client)
            client.close()
        assert (record.ok, record.error) == (False, reason)


async def test_a_request_past_its_timeout_is_cut_and_counted() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(FRAMES[:1])[:-5])
        await writer.drain()
        await reader.read()  # until the client gives up and closes

    async with raw_server(answer) as (url, _):
        client = Client(Target.parse(url), {})
        started = time.perf_counter()
        record = await send(client, timeout_s=0.3)
        client.close()
    assert record.error == "timeout" and record.text_frames == 1
    assert 0.3 <= time.perf_counter() - started < 1.0
