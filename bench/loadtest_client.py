"""How many token frames per second `hello-ship loadtest` reads on one core.

A load tester short of CPU reports its own lateness as the target's TTFT, so the client must
outrun what it measures. This starts a raw SSE server on core 0 that streams answers in
hello-ship's frame format, one `write` per frame (the worst case for a reader: every frame
its own TCP segment), every `--gap-ms` on every open stream, and runs the load tester's
closed loop on core 1. It prints the frames read per second, the client's CPU share and its
CPU per frame, hence the frames per second one core can read; and checks the measured TTFT
and ITL against the server's pacing. Run: `make bench-loadtest`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from bench.relay import cpu_s, free_port
from tools.loadtest_http import Client, Target
from tools.loadtest_progress import NoProgress
from tools.loadtest_prompts import BUILTIN
from tools.loadtest_run import Load, Plan, Run
from tools.loadtest_sse import DIALECTS

try:
    from uvloop import run
except ImportError:  # pragma: no cover
    from asyncio import run

SERVER = r'''
import asyncio, sys, uvloop
port, tokens, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
def chunk(data): return b"%x\r\n%b\r\n" % (len(data), data)
TOKEN = chunk(b'id: 1\nevent: token\ndata: {"type":"token","token":" word"}\n\n')
DONE = chunk(b'id: 2\nevent: done\ndata: {"type":"done","finish_reason":"stop",'
             b'"usage":{"input_tokens":5,"output_tokens":%d}}\n\n' % tokens) + b"0\r\n\r\n"
streams = {}
class Stream(asyncio.Protocol):
    def connection_made(self, transport): self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep: return
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        if len(rest) < length: return
        self.buf = rest[length:]
        self.transport.write(HEAD)
        streams[self] = tokens
    def connection_lost(self, exc): streams.pop(self, None)
def tick(loop):
    loop.call_later(gap, tick, loop)
    for stream, left in list(streams.items()):
        stream.transport.write(TOKEN)
        if left == 1:
            stream.transport.write(DONE)
            del streams[stream]
        else:
            streams[stream] = left - 1
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Stream, "127.0.0.1", port)
    tick(loop)
    await server.serve_forever()
uvloop.run(main())
'''


async def drive(port: int, concurrency: int, seconds: float) -> tuple[float, float, float, float]:
    client = Client(Target.parse(f"http://127.0.0.1:{port}/chat/stream"), {})
    plan = Plan(client, DIALECTS["hello-ship"], BUILTIN, [Load("concurrency", concurrency)],
                requests=10**9, duration_s=seconds)
    try:
        (level,) = await Run(plan, NoProgress()).execute()
    finally:
        client.close()
    s = level.summary
    if s.failed or s.ttft is None or s.itl is None:
        raise RuntimeError(f"failed requests: {s.errors}")
    frames = sum(record.text_frames for record in level.records if record.ok)
    return frames / s.window_s, level.client.cpu_share, s.ttft.p50, s.itl.p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="50,200,400", help="streams in flight")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="between frames of a stream")
    parser.add_argument("--tokens", type=int, default=100, help="frames per answer")
    parser.add_argument("--seconds", type=float, default=5.0, help="per level")
    args = parser.parse_args()
    pinned = shutil.which("taskset") is not None
    if pinned:
        os.sched_setaffinity(0, {1})
    port = free_port()
    command = [sys.executable, "-c", SERVER, str(port), str(args.tokens), str(args.gap_ms)]
    server = subprocess.Popen(["taskset", "-c", "0", *command] if pinned else command)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"loadtest client: a raw SSE server on core 0 writing one frame per stream every "
              f"{args.gap_ms:g} ms, {args.tokens}-frame answers; the client on core 1, "
              f"{args.seconds:g} s per level")
        print(f"{'streams':>8} {'frames/s read':>14} {'client CPU':>11} {'us/frame':>9} "
              f"{'frames/s per core':>18} {'server CPU':>11} {'TTFT p50 ms':>12} "
              f"{'ITL p50 ms':>11}")
        for level in (int(x) for x in args.levels.split(",")):
            before, started = cpu_s(server.pid), time.perf_counter()
            frames, cpu, ttft, itl = run(drive(port, level, args.seconds))
            server_cpu = (cpu_s(server.pid) - before) / (time.perf_counter() - started)
            per_frame = cpu / frames
            print(f"{level:>8} {frames:>14,.0f} {cpu:>11.0%} {per_frame * 1e6:>9.1f} "
                  f"{1 / per_frame:>18,.0f} {server_cpu:>11.0%} {ttft * 1000:>12.2f} "
                  f"{itl * 1000:>11.2f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
