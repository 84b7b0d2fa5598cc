"""Metrics benchmark: what counting costs per token, next to relaying the token.

The only metric work per token is one observation of the inter-token histogram (everything
else is counted once per request). This runs the real pipeline in-process at zero pacing
with every guard category allowed, so each model token is one frame and one observation
(the worst case), once with the histogram and once with it swapped for a no-op, and prints
medians of the CPU per token. It does so in this process (one worker: in-memory values) and
again in a child process with `PROMETHEUS_MULTIPROC_DIR` set (`serve --workers N`: values in
shared files), plus the bare cost of one observation in each mode.

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
from streaming.moderation import OutputGuard, OutputStage
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord
from telemetry.metrics import INTER_TOKEN

REQUEST = CompletionRequest(messages=(Message("user", "Tell me a story."),), max_tokens=4096)
UNGUARDED = OutputGuard(Scanner([]), GuardPolicy())


class Burst:
    route = "bench/burst"

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        for _ in range(self._tokens):
            yield TextDelta(" word")


class _NoOp:
    def labels(self, *values: str) -> _NoOp:
        return self

    def observe(self, value: float) -> None:
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
    for _ in range(runs):
        pipeline.INTER_TOKEN = INTER_TOKEN
        with_metrics.append(await answer_s(tokens) / tokens * 1e6)
        pipeline.INTER_TOKEN = _NoOp()  # type: ignore[assignment]
        without.append(await answer_s(tokens) / tokens * 1e6)
    pipeline.INTER_TOKEN = INTER_TOKEN
    return statistics.median(with_metrics), statistics.median(without)


def observe_us(calls: int = 200_000) -> float:
    child = INTER_TOKEN.labels("bench/burst", "stream")
    started = time.perf_counter()
    for _ in range(calls):
        child.observe(0.02)
    return (time.perf_counter() - started) / calls * 1e6


def report(args: argparse.Namespace) -> None:
    mode = "multiprocess files" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "in memory"
    on, off = anyio.run(per_token_us, args.tokens, args.runs, backend="asyncio",
                        backend_options={"use_uvloop": True})
    print(f"  {mode:>18}: one observation {observe_us():.2f} us; relay {off:.2f} us/token "
          f"without metrics, {on:.2f} with: {on - off:+.2f} us/token "
          f"({(on - off) / off * 100:+.1f} %)")


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
