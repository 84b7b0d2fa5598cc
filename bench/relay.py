"""Relay benchmark: how many token frames per second one core pushes to SSE readers.

Starts `hello-ship serve` pinned to core 0 on the demo provider with zero pacing, drives it
from core 1 with a small load generator that reads the raw SSE bytes over keep-alive
connections, and prints, per concurrency level, token frames relayed per second, streams per
second and the median time to first token; then the service's resident memory per open,
quiet stream. `--endpoints stream,openai` measures `/chat/stream` and OpenAI's
`/v1/chat/completions` side by side on one service, alternating runs. Run: `make bench` (or
`.venv/bin/python bench/relay.py --help`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import orjson

try:
    from uvloop import run
except ImportError:  # pragma: no cover
    from asyncio import run

# What marks a token frame on each endpoint: an SSE event name, or a chunk's content delta.
TOKEN = {"stream": b"\nevent: token\n", "openai": b'"delta":{"content":'}
PATH = {"stream": b"/chat/stream", "openai": b"/v1/chat/completions"}
DONE = b"0\r\n\r\n"


class StreamReader(asyncio.Protocol):
    """Counts token frames and notices the end of each chunked response, without parsing."""

    def __init__(self, token: bytes = TOKEN["stream"]) -> None:
        self.token = token
        self.tail = b""
        self.tokens = 0
        self.first_token_at: float | None = None
        self.done: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        found = buf.count(self.token)
        if found and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.tokens += found
        self.tail = buf[-32:]
        if self.tail.endswith(DONE) and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("server closed the connection"))


def request_bytes(port: int, message: str, endpoint: str = "stream") -> bytes:
    body = orjson.dumps({"message": message} if endpoint == "stream" else {
        "model": "default", "stream": True, "messages": [{"role": "user", "content": message}]})
    return (b"POST %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (PATH[endpoint], port, len(body), body))


async def worker(port: int, deadline: float, ttfts: list[float], totals: list[int],
                 endpoint: str) -> None:
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(lambda: StreamReader(TOKEN[endpoint]),
                                             "127.0.0.1", port)
    assert reader.transport is not None
    streams = 0
    while time.perf_counter() < deadline:
        reader.done = loop.create_future()
        reader.first_token_at = None
        reader.tail = b""
        sent = time.perf_counter()
        reader.transport.write(request_bytes(port, f"benchmark stream {streams}", endpoint))
        await reader.done
        assert reader.first_token_at is not None, "a stream without token frames"
        ttfts.append(reader.first_token_at - sent)
        streams += 1
    totals.append(reader.tokens)
    reader.transport.close()


async def drive(port: int, concurrency: int, seconds: float,
                endpoint: str = "stream") -> tuple[float, float, float]:
    ttfts: list[float] = []
    totals: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(worker(port, start + seconds, ttfts, totals, endpoint)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return sum(totals) / elapsed, len(ttfts) / elapsed, statistics.median(ttfts) * 1000


def cpu_s(pid: int) -> float:
    """The process's CPU time so far, user and system."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read())[1])  # type: ignore[index]


async def hold_quiet_streams(port: int, count: int) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    transports = []
    for index in range(count):
        transport, _ = await loop.create_connection(StreamReader, "127.0.0.1", port)
        transport.write(request_bytes(port, f"quiet stream {index}"))
        transports.append(transport)
    await asyncio.sleep(2.0)  # let every request reach its quiet wait
    return transports


# The load is one tenant (open mode): its limits are set out of the way, so the figures
# include admission and settlement but never a 429.
ROOMY_LIMITS = {"RPM_PER_TENANT": "10000000", "STREAMS_PER_TENANT": "1000000",
                "DAILY_BUDGET_TOKENS": "1000000000000"}


def start_service(port: int, env: dict[str, str], core: str) -> subprocess.Popen[bytes]:
    env = {**ROOMY_LIMITS, **env}
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", core, *command]
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the service did not start")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--levels", default="1,50,200", help="concurrency levels")
    parser.add_argument("--quiet-streams", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per figure; the median is printed (shared machines are noisy)")
    parser.add_argument("--ttft-ms", type=float, default=0.0,
                        help="the demo's time to first token (0: zero pacing)")
    parser.add_argument("--token-ms", type=float, default=0.0,
                        help="the demo's time between tokens (0: zero pacing)")
    parser.add_argument("--endpoints", default="stream",
                        help="stream (/chat/stream), openai (/v1/chat/completions), or both")
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})

    port = free_port()
    fast = {"DEMO_TTFT_MS": str(args.ttft_ms), "DEMO_TOKEN_DELAY_MS": str(args.token_ms),
            "DEMO_ANSWER_TOKENS": str(args.tokens), "MAX_OUTPUT_TOKENS": str(args.tokens * 2)}
    service = start_service(port, fast, "0")
    try:
        run(drive(port, 1, 1.0))  # warm up
        pacing = (f"{args.ttft_ms:g} ms to the first token, {args.token_ms:g} ms a token"
                  if args.ttft_ms or args.token_ms else "zero pacing")
        print(f"relay: demo provider, {pacing}, {args.tokens}-token answers, "
              f"service on core 0, load on core 1, median of {args.repeat} runs of "
              f"{args.seconds:g} s")
        print(f"{'endpoint':>8} {'streams':>8} {'token frames/s':>15} {'streams/s':>10} "
              f"{'median TTFT ms':>15} {'CPU us/frame':>13}")
        for level in (int(x) for x in args.levels.split(",")):
            runs: dict[str, list[tuple[float, ...]]] = {e: [] for e in endpoints}
            for _ in range(args.repeat):  # alternating, so both see the same machine
                for endpoint in endpoints:
                    before = cpu_s(service.pid)
                    frames, streams, ttft = run(drive(port, level, args.seconds, endpoint))
                    # The service's CPU per token frame: the cost of the per-token path, also
                    # when the core is not saturated (paced runs).
                    cpu_us = (cpu_s(service.pid) - before) / (frames * args.seconds) * 1e6
                    runs[endpoint].append((frames, streams, ttft, cpu_us))
            for endpoint in endpoints:
                frames, streams, ttft, cpu_us = (statistics.median(figure)
                                                 for figure in zip(*runs[endpoint], strict=True))
                print(f"{endpoint:>8} {level:>8} {frames:>15,.0f} {streams:>10,.1f} "
                      f"{ttft:>15.2f} {cpu_us:>13.1f}")
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)

    per_stream = []
    for _ in range(args.repeat):
        port = free_port()
        service = start_service(port, {"DEMO_TTFT_MS": "600000"}, "0")
        try:
            per_stream.append(run(drive_quiet(service.pid, port, args.quiet_streams)))
        finally:
            service.kill()
            service.wait(timeout=30)
    kib = statistics.median(per_stream)
    print(f"memory: {args.quiet_streams} open quiet streams: {kib:.1f} KiB "
          f"({kib * 1.024:.1f} kB) of service RSS per stream, median of {args.repeat}")


async def drive_quiet(pid: int, port: int, count: int) -> float:
    """RSS growth per stream while `count` streams wait for a first token."""
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    transports = await hold_quiet_streams(port, count)
    after = rss_kib(pid)
    for transport in transports:
        transport.close()
    return (after - before) / count


if __name__ == "__main__":
    main()
