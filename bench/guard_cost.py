"""Output guard benchmark: what the default guard adds to time to first token and per token.

Runs the real pipeline in-process on a scripted provider that streams a realistic answer
(prose with an email address, a phone number and a card number in it, split into
model-sized tokens), once with the default guard and once with every category allowed, and
prints medians, at realistic token rates:

- added time to first token (the guard holds the first word until the next one starts);
- the guard's own work per token: time spent inside the output stage (buffering, the hold
  back, the scans), timed around its calls;
- CPU per token of the whole answer, with and without the guard (process CPU time: the
  pipeline, its timer wake-ups and the frames, which the guard makes fewer and larger).

And the same CPU per token at zero pacing, the pipeline's ceiling.

Run: `make bench-guard` (or `.venv/bin/python bench/guard_cost.py --help`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial

import anyio

from app.guardrails import Guardrails
from config.guard import GuardSettings
from guard.scan import Scanner
from providers.types import CompletionRequest, Message, ProviderEvent, TextDelta
from streaming.frames import Frame, TokenFrame
from streaming.output_guard import OutputGuard, OutputStage
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
        self.tokens, self._gap_s = tokens, gap_s

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        for token in self.tokens:
            if self._gap_s:
                await anyio.sleep(self._gap_s)
            yield TextDelta(token)


class TimedStage(OutputStage):
    """The output stage, with the time spent inside its calls added up."""

    __slots__ = ("spent",)

    def __init__(self, guard: OutputGuard) -> None:
        super().__init__(guard)
        self.spent = 0.0

    def feed(self, text: str, now: float) -> str:
        return self._timed(partial(OutputStage.feed, self, text, now))

    def release_due(self, now: float) -> str:
        return self._timed(partial(OutputStage.release_due, self, now))

    def flush(self, complete: bool = True) -> str:
        return self._timed(partial(OutputStage.flush, self, complete))

    def _timed(self, call: Callable[[], str]) -> str:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.spent += time.perf_counter() - started


@dataclass(frozen=True)
class Run:
    ttft_s: float  # to the first token frame
    wall_s: float
    cpu_s: float  # process CPU time
    stage_s: float  # inside the output stage
    tokens: int


async def one_answer(guard: OutputGuard, provider: PacedProvider) -> Run:
    started, cpu_started = time.perf_counter(), time.process_time()
    stage = TimedStage(guard)
    job = ChatJob(request_id="req_bench", request=REQUEST, provider=provider,
                  stage=stage, record=StreamRecord(started_at=time.monotonic()))
    send, receive = anyio.create_memory_object_stream[Frame](32)
    first: float | None = None
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            async for frame in receive:
                if first is None and isinstance(frame, TokenFrame):
                    first = time.perf_counter() - started
    return Run(first or 0.0, time.perf_counter() - started, time.process_time() - cpu_started,
               stage.spent, len(provider.tokens))


def us_per_token(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(run, field) / run.tokens for run in runs) * 1e6


async def at_rate(on: OutputGuard, off: OutputGuard, rate: float, runs: int) -> str:
    tokens = model_tokens(ANSWER)
    guarded: list[Run] = []
    plain: list[Run] = []
    for _ in range(runs):
        guarded.append(await one_answer(on, PacedProvider(tokens, 1 / rate)))
        plain.append(await one_answer(off, PacedProvider(tokens, 1 / rate)))
    added_ttft = statistics.median(g.ttft_s - p.ttft_s for g, p in zip(guarded, plain,
                                                                        strict=True))
    return (f"  {rate:>4.0f} tokens/s: +{added_ttft * 1000:5.1f} ms to first token; "
            f"the stage {us_per_token(guarded, 'stage_s'):5.1f} us/token; CPU "
            f"{us_per_token(guarded, 'cpu_s'):5.1f} us/token with the guard, "
            f"{us_per_token(plain, 'cpu_s'):5.1f} without")


async def unpaced(on: OutputGuard, off: OutputGuard, repeat: int, runs: int) -> str:
    tokens = model_tokens(ANSWER) * repeat
    guarded = [await one_answer(on, PacedProvider(tokens, 0.0)) for _ in range(runs)]
    plain = [await one_answer(off, PacedProvider(tokens, 0.0)) for _ in range(runs)]
    return (f"  zero pacing: the stage {us_per_token(guarded, 'stage_s'):.1f} us/token; CPU "
            f"{us_per_token(guarded, 'cpu_s'):.1f} us/token with the guard, "
            f"{us_per_token(plain, 'cpu_s'):.1f} without")


async def main(args: argparse.Namespace) -> None:
    default = Guardrails(GuardSettings(hold_s=args.hold_ms / 1000)).output_guard("anonymous")
    allowed = OutputGuard(Scanner([]), default.policy)
    print(f"answer: {len(ANSWER)} chars, {len(model_tokens(ANSWER))} tokens; "
          f"hold time {default.max_hold_s * 1000:.0f} ms; medians of {args.runs} runs")
    for rate in args.rates:
        print(await at_rate(default, allowed, rate, args.runs), flush=True)
    print(await unpaced(default, allowed, args.repeat, args.runs))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[30, 60, 120],
                        help="token rates to measure at (tokens/s)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--hold-ms", type=float, default=GuardSettings().hold_s * 1000,
                        help="the guard's hold time (GUARD_HOLD_MS)")
    parser.add_argument("--repeat", type=int, default=40,
                        help="copies of the answer in the zero-pacing run")
    anyio.run(main, parser.parse_args(), backend="asyncio",
              backend_options={"use_uvloop": True})
