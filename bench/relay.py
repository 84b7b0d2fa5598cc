"""Relay benchmark: how many token frames per second one core pushes to SSE readers.

Starts `hello-ship serve` pinned to core 0 on the demo provider with zero pacing, drives it
from core 1 with `hello-ship loadtest`'s closed loop (tools/loadtest_run.py, which reads the
raw SSE bytes over keep-alive connections), and prints, per concurrency level, token frames
relayed per second, streams per second, the median time to first token, the service's CPU per
token frame and the load generator's own CPU share (near 100 %, the figures would be its
own); then the service's resident memory per open, quiet stream. `--endpoints stream,openai`
measures `/chat/stream` and OpenAI's `/v1/chat/completions` side by side on one service,
alternating runs. Run: `make bench-relay` (or `.venv/bin/python bench/relay.py --help`);
`make bench` is bench/gateway.py, the service beside the vendor it relays.
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

from tools.loadtest_http import Client, Target
from tools.loadtest_progress import NoProgress
from tools.loadtest_prompts import BUILTIN
from tools.loadtest_run import Load, Plan, Run
from tools.loadtest_sse import DIALECTS

try:
    from uvloop import run
except ImportError:  # pragma: no cover
    from asyncio import run

PATH = {"stream": "/chat/stream", "openai": "/v1/chat/completions"}
DIALECT = {"stream": "hello-ship", "openai": "openai"}


def request_bytes(port: int, message: str) -> bytes:
    body = orjson.dumps({"message": message})
    return (b"POST /chat/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (port, len(body), body))


async def drive(port: int, concurrency: int, seconds: float,
                endpoint: str = "stream") -> tuple[float, float, float, float]:
    """`hello-ship loadtest`'s closed loop for `seconds`: token frames and streams per
    second, the median TTFT in ms, and the load generator's own CPU share."""
    client = Client(Target.parse(f"http://127.0.0.1:{port}{PATH[endpoint]}"), {})
    plan = Plan(client, DIALECTS[DIALECT[endpoint]], BUILTIN, [Load("concurrency", concurrency)],
                requests=10**9, duration_s=seconds, model="default")
    try:
        (level,) = await Run(plan, NoProgress()).execute()
    finally:
        client.close()
    summary = level.summary
    if summary.failed or summary.ttft is None:
        raise RuntimeError(f"the service failed requests: {summary.errors}")
    frames = sum(record.text_frames for record in level.records if record.ok)
    return (frames / summary.window_s, summary.requests_per_s, summary.ttft.p50 * 1000,
            level.client.cpu_share)


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
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
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
              f"{'median TTFT ms':>15} {'CPU us/frame':>13} {'load gen CPU':>13}")
        for level in (int(x) for x in args.levels.split(",")):
            runs: dict[str, list[tuple[float, ...]]] = {e: [] for e in endpoints}
            for _ in range(args.repeat):  # alternating, so both see the same machine
                for endpoint in endpoints:
                    before = cpu_s(service.pid)
                    started = time.perf_counter()
                    frames, streams, ttft, load_cpu = run(drive(port, level, args.seconds,
                                                                endpoint))
                    # The service's CPU per token frame: the cost of the per-token path, also
                    # when the core is not saturated (paced runs).
                    total = frames * (time.perf_counter() - started)
                    cpu_us = (cpu_s(service.pid) - before) / total * 1e6
                    runs[endpoint].append((frames, streams, ttft, cpu_us, load_cpu))
            for endpoint in endpoints:
                frames, streams, ttft, cpu_us, load_cpu = (
                    statistics.median(figure) for figure in zip(*runs[endpoint], strict=True))
                print(f"{endpoint:>8} {level:>8} {frames:>15,.0f} {streams:>10,.1f} "
                      f"{ttft:>15.2f} {cpu_us:>13.1f} {load_cpu:>13.0%}")
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
