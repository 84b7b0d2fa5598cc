"""Metrics benchmark: what counting costs per token, next to relaying the token.

The only metric work per token is tallying the gap since the previous token frame (the
tally goes into the inter-token histogram once per answer; everything else is counted once
per request). This runs the real pipeline in-process at zero pacing with every guard
category allowed, so each model token is one frame (the worst case), with the metrics as
they are and with the tally swapped for a no-op, and prints medians of the time per token.
It does so in this process (one worker: in-memory values) and again in a child process with
`PROMETHEUS_MULTIPROC_DIR` set (`serve --workers N`: values in shared files), next to the
bare cost of one tally and of one histogram observation (what a per-token observation
would cost) in each mode.

Run: `make bench-metrics` (or `.venv/bin/python bench/metrics_cost.py --help`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator

import anyio

from guard.policy import GuardPolicy
from guard.scan import Scanner
from providers.types import CompletionRequest, Message, ProviderEvent, TextDelta
from streaming import pipeline
from streaming.frames import Frame
from streaming.output_guard import OutputGuard, OutputStage
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord
from telemetry.metrics import INTER_TOKEN, GapTally

REQUEST = CompletionRequest(messages=(Message("user", "Tell me a story."),), max_tokens=4096)
UNGUARDED = OutputGuard(Scanner([]), GuardPolicy())


class Burst:
    route = "bench/burst"

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        for _ in range(self._tokens):
            yield TextDelta(" word")


class _NoTally:
    def add(self, gap: float) -> None:
        return None

    def record(self, route: str, endpoint: str) -> None:
        return None


async def answer_s(tokens: int) -> float:
    job = ChatJob(request_id="req_bench", request=REQUEST, provider=Burst(tokens),
                  stage=OutputStage(UNGUARDED), record=StreamRecord(started_at=time.monotonic()))
    send, receive = anyio.create_memory_object_stream[Frame](32)
    started = time.perf_counter()
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            async for _ in receive:
                pass
    return time.perf_counter() - started


async def per_token_us(tokens: int, runs: int) -> tuple[float, float]:
    """Median microseconds per token (with metrics, without), runs interleaved."""
    with_metrics, without = [], []
    names = vars(pipeline)  # the tally the pipeline makes for each answer
    for _ in range(runs):
        names["GapTally"] = GapTally
        with_metrics.append(await answer_s(tokens) / tokens * 1e6)
        names["GapTally"] = _NoTally
        without.append(await answer_s(tokens) / tokens * 1e6)
    names["GapTally"] = GapTally
    return statistics.median(with_metrics), statistics.median(without)


def bare_us(calls: int = 200_000) -> tuple[float, float]:
    """Microseconds of one tally, and of one observation of the histogram."""
    tally = GapTally()
    started = time.perf_counter()
    for _ in range(calls):
        tally.add(0.02)
    tallied = (time.perf_counter() - started) / calls * 1e6
    tally.record("bench/burst", "stream")
    child = INTER_TOKEN.labels("bench/burst", "stream")
    started = time.perf_counter()
    for _ in range(calls):
        child.observe(0.02)
    return tallied, (time.perf_counter() - started) / calls * 1e6


def report(args: argparse.Namespace) -> None:
    mode = "multiprocess files" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "in memory"
    on, off = anyio.run(per_token_us, args.tokens, args.runs, backend="asyncio",
                        backend_options={"use_uvloop": True})
    tallied, observed = bare_us()
    print(f"  {mode:>18}: relay {off:.2f} us/token without metrics, {on:.2f} with: "
          f"{on - off:+.2f} us/token ({(on - off) / off * 100:+.1f} %); one tally "
          f"{tallied:.2f} us, one observation {observed:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=5000, help="tokens per answer")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(args)
        return
    print(f"{args.tokens} tokens per answer, one frame each; medians of {args.runs} runs")
    report(args)
    with tempfile.TemporaryDirectory(prefix="hello-ship-bench-") as shared:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": shared}
        subprocess.run([sys.executable, __file__, "--child", "--tokens", str(args.tokens),
                        "--runs", str(args.runs)], env=env, check=True)


if __name__ == "__main__":
    main()
