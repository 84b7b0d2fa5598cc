"""Answers that outlive their connection: the pipeline runs on its own, readers come and go.

Each streamed answer runs detached from the request that started it. Its frames go to a
replay log (`streaming.replay`); a reader follows the log from any frame on, so a reader whose
connection dropped comes back with the id of the last frame it got and misses nothing and
repeats nothing. While no reader follows (here, or on another replica through the log's lease),
the answer keeps going for `grace_s`, then it is cut and billed for what was generated;
`stop` cuts it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from streaming.failures import error_frame
from streaming.frames import (
    SSE_HEARTBEAT,
    DoneFrame,
    ErrorFrame,
    Frame,
    HeartbeatFrame,
    SSEEncoder,
)
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord
from streaming.replay import ReplayStore

logger = logging.getLogger("hello_ship.pipeline")

# A reader on another replica holds a lease this long, renewed three times within it.
LEASE_S = 3.0
# How often the owner renews its log and looks for readers and a stop when nothing wakes it.
TICK_S = 1.0
# An answer waits at least this long for its first reader (a browser opening its stream URL),
# whatever the grace.
FIRST_READER_S = 5.0
FRAME_BUFFER = 32

Cut = Literal["stopped", "abandoned"]
OnEnd = Callable[[int], Awaitable[None]]
OnCut = Callable[[StreamRecord, Cut], None]


@dataclass(slots=True, eq=False)
class _Run:
    stream_id: str
    job: ChatJob
    readers: int = 0  # readers in this process; those elsewhere hold leases in the log
    read: bool = False  # a reader came, here or elsewhere
    last_seen: float = field(default_factory=time.monotonic)  # a reader was there, or it began
    stop_asked: bool = False
    stalled: bool = False  # the last reader here was dropped for not reading
    cut: Cut | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)

    def poke(self) -> None:
        self.changed.set()


class Answers:
    """The streamed answers this process runs, and their readers' way in."""

    def __init__(self, store: ReplayStore, *, grace_s: float, heartbeat_s: float) -> None:
        self.store = store
        self.grace_s = grace_s
        self.heartbeat_s = heartbeat_s
        # Kept while the answer runs even if its owner is slow to renew; gone soon after an
        # owner that died, so its readers learn it.
        self.live_ttl_s = grace_s + 3 * TICK_S + LEASE_S
        # An ended answer is kept for a late reader's resume, and at least as long as a reader
        # still reading it needs to get to its end.
        self.ended_ttl_s = max(grace_s, LEASE_S)
        self._runs: dict[str, _Run] = {}
        self._group: TaskGroup | None = None

    async def serve(self) -> None:
        """Hold the answers' tasks; runs for the life of the app."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None

    async def start(self, stream_id: str, tenant: str, job: ChatJob, on_end: OnEnd,
                    on_cut: OnCut, stop: anyio.Event | None, stop_grace_s: float) -> None:
        """Run the answer detached; its log exists when this returns."""
        if self._group is None:
            raise RuntimeError("the answers' task group is not running")
        await self.store.open(stream_id, tenant, self.live_ttl_s)
        run = _Run(stream_id, job)
        self._runs[stream_id] = run
        self._group.start_soon(self._run, run, on_end, on_cut, stop, stop_grace_s)

    def attach(self, stream_id: str) -> _Run | None:
        """A reader in this process follows the answer; `detach` when it goes."""
        run = self._runs.get(stream_id)
        if run is not None:
            run.readers += 1
            run.read, run.last_seen = True, time.monotonic()
        return run

    def detach(self, run: _Run | None, *, stalled: bool = False) -> None:
        if run is not None:
            run.readers -= 1
            run.stalled = stalled
            run.last_seen = time.monotonic()
            run.poke()

    async def stop(self, stream_id: str) -> None:
        """Stop the answer, wherever it runs."""
        run = self._runs.get(stream_id)
        if run is not None:
            run.stop_asked = True
            run.poke()
        else:
            await self.store.stop(stream_id)

    async def _run(self, run: _Run, on_end: OnEnd, on_cut: OnCut,
                   stop: anyio.Event | None, stop_grace_s: float) -> None:
        frames_in, frames_out = anyio.create_memory_object_stream[Frame](FRAME_BUFFER)
        next_id = 0
        try:
            with frames_in, frames_out:
                async with anyio.create_task_group() as group:
                    group.start_soon(partial(run_pipeline, run.job, frames_in, stop=stop,
                                             stop_grace_s=stop_grace_s))
                    group.start_soon(self._watch, run, group.cancel_scope)
                    next_id = await self._pump(run, frames_out)
                    group.cancel_scope.cancel()
            if run.cut is not None:
                with anyio.CancelScope(shield=True):
                    await self._end_cut(run, next_id, on_cut)
        except Exception:
            logger.exception("pipeline_failed", extra={"route": run.job.route})
        finally:
            self._runs.pop(run.stream_id, None)
            with anyio.CancelScope(shield=True):
                await on_end(200)

    async def _pump(self, run: _Run, frames: MemoryObjectReceiveStream[Frame]) -> int:
        """Encode the frames and add them to the log, all that wait in one write; the id of
        the next frame when the pipeline is done."""
        encoder = SSEEncoder()
        next_id = 0
        async for frame in frames:
            batch = [frame]
            while True:
                try:
                    batch.append(frames.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            encoded = [encoder.encode(f) for f in batch if not isinstance(f, HeartbeatFrame)]
            if not encoded:
                continue
            ended = isinstance(batch[-1], DoneFrame | ErrorFrame)
            # Once it ended, a late reader still gets the rest for the grace.
            await self.store.append(run.stream_id, next_id, encoded, ended,
                                    self.ended_ttl_s if ended else self.live_ttl_s)
            next_id += len(encoded)
        return next_id

    async def _watch(self, run: _Run, scope: anyio.CancelScope) -> None:
        """Keep the log alive; cut the answer when asked to, or when nobody followed it for
        the grace."""
        while True:
            await self.store.keep(run.stream_id, self.live_ttl_s)
            if run.stop_asked or await self.store.stop_asked(run.stream_id):
                run.cut = "stopped"
                scope.cancel()
                return
            now = time.monotonic()
            if run.readers or await self.store.attended(run.stream_id):
                run.read, run.last_seen = True, now
            grace = self.grace_s if run.read else max(self.grace_s, FIRST_READER_S)
            wait = TICK_S
            if not run.readers:
                left = grace - (now - run.last_seen)
                if left <= 0:
                    run.cut = "abandoned"
                    scope.cancel()
                    return
                wait = min(wait, left)
            with anyio.move_on_after(wait):
                await run.changed.wait()
            run.changed = anyio.Event()

    async def _end_cut(self, run: _Run, next_id: int, on_cut: OnCut) -> None:
        """The last frame of a cut answer: `stopped` for whoever still reads; an abandoned
        one's log goes at once, so a resume after the grace is told it came too late."""
        record = run.job.record
        assert run.cut is not None
        if record.outcome == "pending":
            record.outcome = "client_stalled" if run.stalled else "client_disconnected"
        on_cut(record, run.cut)
        code = "stopped" if run.cut == "stopped" else "resume_expired"
        frame = error_frame(code, request_id=run.job.request_id,
                            tokens_emitted=record.tokens_emitted)
        await self.store.append(run.stream_id, next_id, [SSEEncoder(next_id).encode(frame)], True,
                                self.ended_ttl_s if run.cut == "stopped" else 0.0)

    async def follow(self, stream_id: str, after: int, local: bool, retry: bytes,
                     request_id: str) -> AsyncIterator[bytes]:
        """The SSE bytes a reader gets: the frames after `after`, then the answer live, with
        heartbeats while it is quiet; `resume_expired` if the log cannot give them."""
        yield retry
        last_sent = time.monotonic()
        while True:
            if not local:
                await self.store.hold(stream_id, LEASE_S)
            quiet_for = time.monotonic() - last_sent
            wait = max(0.0, self.heartbeat_s - quiet_for)
            if not local:
                wait = min(wait, LEASE_S / 3)
            batch = await self.store.read(stream_id, after, wait)
            if batch is None:
                yield expired_frame(after + 1, request_id)
                return
            if batch.frames:
                yield b"".join(batch.frames)
                after = batch.last_id
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= self.heartbeat_s:
                yield SSE_HEARTBEAT
                last_sent = time.monotonic()
            if batch.ended:
                return


def expired_frame(frame_id: int, request_id: str) -> bytes:
    """One `resume_expired` error frame, numbered after the last frame the reader had."""
    return SSEEncoder(max(frame_id, 0)).encode(error_frame("resume_expired", request_id=request_id,
                                      tokens_emitted=0))
