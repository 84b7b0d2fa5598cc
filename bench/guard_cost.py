"""Output guard benchmark: what the default guard adds to time to first token and per token.

Runs the real pipeline in-process on a scripted provider that streams a realistic answer
(prose with an email address, a phone number and a card number in it, split into
model-sized tokens), once with the default guard and once with every category allowed, and
prints medians:

- added time to first token at realistic token rates (the guard holds text until the first
  sentence end, the next token, or its hold time);
- CPU per token at zero pacing (the scan on every release, amortised over its tokens).

Run: `make bench-guard` (or `.venv/bin/python bench/guard_cost.py --help`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import AsyncGenerator

import anyio

from app.guard_config import GuardSettings
from app.guardrails import Guardrails
from guard.scan import Scanner
from providers.types import CompletionRequest, Message, ProviderEvent, TextDelta
from streaming.frames import Frame, TokenFrame
from streaming.moderation import OutputGuard, OutputStage
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord

ANSWER = (
    "Thanks for reaching out about your refund. I checked the order you mentioned and the "
    "payment was captured twice on the same day, which explains the extra charge on your "
    "statement. You can reach our billing team at billing.help@example.com or call them at "
    "+1 (415) 555-0132 between nine and five. If you paid with the card ending in 4111 1111 "
    "1111 1111, the second charge will be reversed within five business days. Let me know "
    "if there is anything else I can help with today!"
)
REQUEST = CompletionRequest(messages=(Message("user", "Where is my refund?"),), max_tokens=512)


def model_tokens(text: str) -> list[str]:
    """Pieces about the size of a model's tokens: words with their leading space, long words
    in four-character parts."""
    pieces: list[str] = []
    for word in re.findall(r"\s*\S+", text):
        pieces.extend(word[i:i + 4] for i in range(0, len(word), 4))
    return pieces


class PacedProvider:
    route = "bench/paced"

    def __init__(self, tokens: list[str], gap_s: float) -> None:
        self._tokens, self._gap_s = tokens, gap_s

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        for token in self._tokens:
            if self._gap_s:
                await anyio.sleep(self._gap_s)
            yield TextDelta(token)


async def one_answer(guard: OutputGuard, provider: PacedProvider) -> tuple[float, float]:
    """(seconds to the first token frame, total seconds) for one answer."""
    started = time.perf_counter()
    job = ChatJob(request_id="req_bench", request=REQUEST, provider=provider,
                  stage=OutputStage(guard), record=StreamRecord(started_at=time.monotonic()))
    send, receive = anyio.create_memory_object_stream[Frame](32)
    first: float | None = None
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            async for frame in receive:
                if first is None and isinstance(frame, TokenFrame):
                    first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


async def added_ttft(on: OutputGuard, off: OutputGuard, gap_s: float, runs: int) -> float:
    tokens = model_tokens(ANSWER)
    deltas = []
    for _ in range(runs):
        with_guard, _ = await one_answer(on, PacedProvider(tokens, gap_s))
        without, _ = await one_answer(off, PacedProvider(tokens, gap_s))
        deltas.append(with_guard - without)
    return statistics.median(deltas)


async def per_token(guard: OutputGuard, repeat: int, runs: int) -> float:
    tokens = model_tokens(ANSWER) * repeat
    totals = [(await one_answer(guard, PacedProvider(tokens, 0.0)))[1] for _ in range(runs)]
    return statistics.median(totals) / len(tokens)


async def main(args: argparse.Namespace) -> None:
    default = Guardrails(GuardSettings(hold_s=args.hold_ms / 1000)).output_guard("anonymous")
    allowed = OutputGuard(Scanner([]), default.policy)
    print(f"answer: {len(ANSWER)} chars, {len(model_tokens(ANSWER))} tokens; "
          f"hold time {default.max_hold_s * 1000:.0f} ms; medians of {args.runs} runs")
    for rate in args.rates:
        delta = await added_ttft(default, allowed, 1 / rate, args.runs)
        print(f"  {rate:>4} tokens/s: guard adds {delta * 1000:6.1f} ms to time to first token")
    on = await per_token(default, args.repeat, args.runs)
    off = await per_token(allowed, args.repeat, args.runs)
    print(f"  zero pacing: {on * 1e6:.1f} us/token with the guard, {off * 1e6:.1f} us/token "
          f"without: {(on - off) * 1e6:+.1f} us/token ({on / off:.2f}x the pipeline alone)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[30, 60, 120],
                        help="token rates to measure the added TTFT at (tokens/s)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--hold-ms", type=float, default=GuardSettings().hold_s * 1000,
                        help="the guard's hold time (GUARD_HOLD_MS)")
    parser.add_argument("--repeat", type=int, default=40,
                        help="copies of the answer in the zero-pacing run")
    anyio.run(main, parser.parse_args(), backend="asyncio",
              backend_options={"use_uvloop": True})
