"""Adapter benchmark: the CPU each vendor adapter spends per streamed chunk.

Each vendor's fake server (tests/upstreams) streams a long answer with no pacing; the adapter
reads it through the official SDK on the main thread, whose CPU time is measured (the fake
runs in its own thread). Also measured, for comparison, the SDKs' typed streaming calls the
adapters avoid (over the same aiohttp transport, so only the decoding differs). Prints the
median of `--runs` runs in microseconds per chunk. Unpaced, a read brings many chunks; a model
streaming at its own pace sends one a read, which costs more per chunk in the HTTP client.
Run: `make bench-adapters` (or `.venv/bin/python bench/adapters.py --help`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.base import Provider
from providers.registry import ProviderOptions, build_provider
from providers.types import CompletionRequest, Message
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import AWS_TEST_ENV, VENDORS, Vendor

REQUEST = CompletionRequest((Message("user", "Say hello."),), max_tokens=64)


async def cpu_per_chunk(stream: Callable[[], AsyncIterator[object]], chunks: int) -> float:
    started = time.thread_time()
    async for _ in stream():
        pass
    return (time.thread_time() - started) / chunks * 1e6


def adapter_stream(vendor: Vendor, upstream: Upstream,
                   providers: list[Provider]) -> Callable[[], AsyncIterator[object]]:
    provider = build_provider(vendor.spec(upstream, timeout_s=30), ProviderOptions())
    providers.append(provider)
    return lambda: provider.stream(REQUEST)


Closers = list[Callable[[], Awaitable[None]]]


def typed_openai(upstream: Upstream, clients: Closers) -> Callable[[], AsyncIterator[object]]:
    import openai

    client = openai.AsyncOpenAI(api_key=upstream.api_key, base_url=upstream.url + "/v1",
                                max_retries=0, http_client=openai.DefaultAioHttpClient())
    clients.append(client.close)

    async def stream() -> AsyncIterator[object]:
        chunks = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello."}],
            stream=True, stream_options={"include_usage": True})
        async for chunk in chunks:
            yield chunk
    return stream


def helper_anthropic(upstream: Upstream, clients: Closers) -> Callable[[], AsyncIterator[object]]:
    import anthropic

    client = anthropic.AsyncAnthropic(api_key=upstream.api_key, base_url=upstream.url,
                                      max_retries=0,
                                      http_client=anthropic.DefaultAioHttpClient())
    clients.append(client.close)

    async def stream() -> AsyncIterator[object]:
        async with client.messages.stream(
                model="claude-3-5-haiku-20241022", max_tokens=64,
                messages=[{"role": "user", "content": "Say hello."}]) as events:
            async for event in events:
                yield event
    return stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20_000, help="tokens per answer")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)
    with ExitStack() as stack:
        anyio.run(measure_all, UpstreamPool(stack), args.chunks, args.runs)


async def measure_all(pool: UpstreamPool, chunks: int, runs: int) -> None:
    tokens = tuple(f" w{n % 1000:03d}" for n in range(chunks))
    cases: list[tuple[str, Upstream, Callable[[], AsyncIterator[object]]]] = []
    providers: list[Provider] = []
    # aiohttp warns of a session left open: the comparison clients are closed at the end.
    clients: Closers = []
    for vendor in VENDORS:
        upstream = pool.get(vendor)
        cases.append((f"{vendor.name} adapter", upstream,
                      adapter_stream(vendor, upstream, providers)))
        if vendor.name == "openai":
            cases.append(("openai SDK typed chunks (not used)", upstream,
                          typed_openai(upstream, clients)))
        if vendor.name == "anthropic":
            cases.append(("anthropic SDK messages.stream (not used)", upstream,
                          helper_anthropic(upstream, clients)))
    print(f"{'path':42} µs CPU per chunk (median of {runs} runs of {chunks} chunks)")
    for name, upstream, stream in cases:
        samples = []
        for _ in range(runs + 1):  # the first run warms imports and the connection pool
            upstream.script = Script(tokens=tokens)
            samples.append(await cpu_per_chunk(stream, chunks))
        print(f"{name:42} {statistics.median(samples[1:]):7.1f}", flush=True)
    for provider in providers:
        await provider.aclose()
    for close in clients:
        await close()


if __name__ == "__main__":
    main()
