"""Driving the load: closed loop (N requests always in flight) or open loop (requests sent at
Poisson arrivals whatever the target's pace, so queueing shows up in TTFT instead of being
hidden by a client that waits: coordinated omission). Each level of a sweep runs in turn, capped
by a number of requests and a duration, and is measured on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tools.loadtest_http import Client
from tools.loadtest_meter import ClientLoad, ClientMeter
from tools.loadtest_prompts import Prompt
from tools.loadtest_record import Recorder, RequestRecord
from tools.loadtest_sse import Dialect
from tools.loadtest_stats import Distribution, Summary, summarize


@dataclass(frozen=True)
class Load:
    kind: Literal["concurrency", "rate"]
    value: float

    def __str__(self) -> str:
        if self.kind == "concurrency":
            return f"concurrency {self.value:g}"
        return f"rate {self.value:g}/s"


@dataclass(frozen=True)
class Plan:
    client: Client
    dialect: Dialect
    prompts: Sequence[Prompt]
    loads: Sequence[Load]
    requests: int  # per level, warm-up not included
    duration_s: float  # per level, warm-up included
    warmup: int = 0
    timeout_s: float = 120.0
    max_tokens: int | None = None
    model: str | None = None
    slo_ttft_s: float | None = None
    max_inflight: int = 1000  # open loop: arrivals beyond this wait, and are counted late
    seed: int = 0


@dataclass
class LevelResult:
    load: Load
    started: float  # on the run's clock (time.perf_counter)
    records: list[RequestRecord]
    summary: Summary
    client: ClientLoad
    achieved_rate: float | None  # requests sent per second (open loop)
    scheduled_rate: float | None  # the rate of the Poisson arrivals drawn (open loop)
    late: Distribution | None  # how long after their due time requests went out (open loop)
    unsent: int = 0  # open loop: arrivals still waiting for --max-inflight when time was up
    interrupted: bool = False


class Progress(Protocol):
    def level_started(self, load: Load, total: int) -> None: ...

    def request_closed(self, record: RequestRecord) -> None: ...

    def tick(self) -> None: ...

    def level_ended(self, result: LevelResult) -> None: ...


@dataclass
class Run:
    plan: Plan
    progress: Progress
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    levels: list[LevelResult] = field(default_factory=list)
    _unsent: int = 0  # of the level running: arrivals the open loop could not send

    async def execute(self) -> list[LevelResult]:
        for index, load in enumerate(self.plan.loads):
            if self.stop.is_set():
                break
            self.levels.append(await self._level(index, load))
        return self.levels

    async def _level(self, index: int, load: Load) -> LevelResult:
        plan = self.plan
        records: list[RequestRecord] = []
        self._unsent = 0
        meter = ClientMeter()
        self.progress.level_started(load, plan.warmup + plan.requests)
        meter.start()
        started = time.perf_counter()
        drive = self._closed if load.kind == "concurrency" else self._open
        ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            await _until(self.stop, drive(index, load, records, started))
        finally:
            ticker.cancel()
        client = meter.stop()
        measured = [r for r in records if not r.warmup]
        sent = sorted(r.sent for r in measured if r.sent is not None)
        achieved = scheduled = late = None
        if load.kind == "rate" and self._unsent:
            # Sending was held back until the time was up: the rates over the whole duration.
            achieved = len(sent) / plan.duration_s
            scheduled = (len(sent) + self._unsent) / plan.duration_s
        elif load.kind == "rate":
            achieved = _rate(sent)
            scheduled = _rate([r.due for r in measured if r.sent is not None])
            late = Distribution.of([r.sent - r.due for r in measured if r.sent is not None])
        result = LevelResult(load, started, records, summarize(records, plan.slo_ttft_s),
                             client, achieved, scheduled, late, self._unsent,
                             interrupted=self.stop.is_set())
        self.progress.level_ended(result)
        return result

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.progress.tick()

    async def _closed(self, level: int, load: Load, records: list[RequestRecord],
                      started: float) -> None:
        plan = self.plan
        deadline = started + plan.duration_s
        numbers = itertools.count()

        async def worker() -> None:
            while (now := time.perf_counter()) < deadline:
                index = next(numbers)
                if index >= plan.warmup + plan.requests:
                    return
                record = RequestRecord(index, level, index < plan.warmup, due=now)
                records.append(record)
                await self._send(record)

        await asyncio.gather(*(worker() for _ in range(int(load.value))))

    async def _open(self, level: int, load: Load, records: list[RequestRecord],
                    started: float) -> None:
        plan = self.plan
        arrivals = random.Random(plan.seed + level)
        slots = asyncio.Semaphore(plan.max_inflight)
        running: set[asyncio.Task[None]] = set()
        deadline = started + plan.duration_s
        due = started
        try:
            for index in range(plan.warmup + plan.requests):
                if index:
                    due += arrivals.expovariate(load.value)
                if due >= deadline:
                    break
                # The loop's timers have a millisecond's resolution and may wake a little
                # early; the rest is waited out in turns of the loop.
                while (wait := due - time.perf_counter()) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(wait)
                try:
                    if slots.locked():
                        left = max(deadline - time.perf_counter(), 0.0)
                        await asyncio.wait_for(slots.acquire(), left)
                    else:
                        await slots.acquire()  # free: at once
                except TimeoutError:  # --max-inflight in flight until the time was up
                    self._unsent = _arrivals_before(deadline, due, arrivals, load.value,
                                                    plan.warmup + plan.requests - index)
                    break
                record = RequestRecord(index, level, index < plan.warmup, due=due)
                records.append(record)
                task = asyncio.get_running_loop().create_task(self._send(record))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
            await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()

    async def _send(self, record: RequestRecord) -> None:
        plan = self.plan
        prompt = plan.prompts[record.index % len(plan.prompts)]
        body = plan.dialect.body(prompt, plan.max_tokens, plan.model)
        await plan.client.send(Recorder(record, plan.dialect), body, plan.timeout_s)
        record.closed = time.perf_counter()
        self.progress.request_closed(record)


def _arrivals_before(deadline: float, due: float, arrivals: random.Random, rate: float,
                     cap: int) -> int:
    """How many arrivals, from the one due at `due` on, fell before `deadline` (at most
    `cap`): the requests an open loop should have sent and could not."""
    count = 0
    while due < deadline and count < cap:
        count += 1
        due += arrivals.expovariate(rate)
    return count


def _rate(times: Sequence[float]) -> float | None:
    """Events per second between the first and the last of `times` (sorted)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


async def _until(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Run `work` until it ends or `stop` is set; on a stop, cancel it (requests in flight are
    left unfinished, and counted so)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.get_running_loop().create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]



