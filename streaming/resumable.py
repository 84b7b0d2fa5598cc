"""Answers that outlive their connection: the pipeline runs on its own, readers come and go.

Each streamed answer runs detached from the request that started it. Its frames go to a
replay log (`streaming.replay`); a reader follows the log from any frame on, so a reader whose
connection dropped comes back with the id of the last frame it got and misses nothing and
repeats nothing. While no reader follows (here, or on another replica through the log's lease),
the answer keeps going for `grace_s`, then it is cut and billed for what was generated;
`stop` cuts it at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectStreamStatistics

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
from streaming.replay import AnswerLogs

logger = logging.getLogger("hello_ship.pipeline")

# A reader on another replica holds a lease this long, renewed three times within it.
LEASE_S = 3.0
# How often the owner renews its log and looks for readers and a stop when nothing wakes it.
TICK_S = 1.0
SWEEP_S = 5.0
YIELD_EVERY = 32  # frames the pipeline writes before it lets the event loop run
# A reader's writes are at most this large (but a frame is never split), so a reader that
# stops reading holds only this much beyond the connection's own small buffers.
CHUNK_BYTES = 65_536
# An answer waits at least this long for its first reader (a browser opening its stream URL),
# whatever the grace.
FIRST_READER_S = 5.0

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
    scope: anyio.CancelScope | None = None  # the answer's, while it runs
    timer: asyncio.TimerHandle | None = None  # when to look whether a reader came back

    def poke(self) -> None:
        self.changed.set()


class _Log:
    """Where the pipeline sends an answer's frames: straight into its log, each as its SSE
    bytes, so readers here have it at once. A reader is never waited for: a slow one reads
    the log at its own pace."""

    __slots__ = ("_encoder", "_store", "_stream_id", "_ttls", "_unyielded", "next_id")

    _ROOM = MemoryObjectStreamStatistics(0, 1, 1, 1, 0, 0)
    _FULL = MemoryObjectStreamStatistics(1, 1, 1, 1, 0, 0)

    def __init__(self, store: AnswerLogs, stream_id: str, ttls: tuple[float, float]) -> None:
        self._store = store
        self._stream_id = stream_id
        self._ttls = ttls  # while it runs, once it ended
        self._encoder = SSEEncoder()
        self._unyielded = 0  # frames written since the pipeline last let others run
        self.next_id = 0

    def send_nowait(self, frame: Frame) -> None:
        # Now and then "full", so the pipeline awaits `send`, which lets the event loop run:
        # a provider whose reads never wait (its data already buffered) must not starve the
        # readers and the other answers.
        if self._unyielded >= YIELD_EVERY:
            raise anyio.WouldBlock
        self._unyielded += 1
        self._write(frame)

    async def send(self, frame: Frame) -> None:
        await anyio.lowlevel.checkpoint()
        self._unyielded = 0
        self._write(frame)

    def _write(self, frame: Frame) -> None:
        if isinstance(frame, HeartbeatFrame):  # quiet for a while: readers here say so
            self._store.local.ping(self._stream_id)
            return
        ended = isinstance(frame, DoneFrame | ErrorFrame)
        self._store.append_now(self._stream_id, self.next_id, (self._encoder.encode(frame),),
                               ended, self._ttls[ended])
        self.next_id += 1

    def statistics(self) -> MemoryObjectStreamStatistics:
        return self._ROOM if self._unyielded < YIELD_EVERY else self._FULL

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> _Log:
        return self

    async def __aexit__(self, exc_type: object, exc_value: object, traceback: object) -> None:
        pass


class Answers:
    """The streamed answers this process runs, and their readers' way in."""

    def __init__(self, store: AnswerLogs, *, grace_s: float, heartbeat_s: float) -> None:
        self.store = store
        self.grace_s = grace_s
        self.heartbeat_s = heartbeat_s
        # Kept while the answer runs even if its owner is slow to renew; gone soon after an
        # owner that died, so its readers learn it.
        # Without a mirror, nothing outside this process reads or renews the logs: they live
        # while their answer runs, and the grace is a timer, not a task that polls.
        self._mirrored = hasattr(store, "flush_forever")
        self.live_ttl_s = grace_s + 3 * TICK_S + LEASE_S if self._mirrored else math.inf
        # An ended answer is kept for a late reader's resume, and at least as long as a reader
        # still reading it needs to get to its end.
        self.ended_ttl_s = max(grace_s, LEASE_S)
        self._runs: dict[str, _Run] = {}
        self._group: TaskGroup | None = None

    async def serve(self) -> None:
        """Hold the answers' tasks; runs for the life of the app."""
        async with anyio.create_task_group() as group:
            self._group = group
            flush = getattr(self.store, "flush_forever", None)
            if flush is not None:  # a mirror to Redis writes behind
                group.start_soon(flush)
            group.start_soon(self._sweep)
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None

    async def _sweep(self) -> None:
        """Drop expired logs now and then, so memory does not wait for the next answer."""
        while True:
            await anyio.sleep(SWEEP_S)
            self.store.local.forget_expired()

    async def start(self, stream_id: str, tenant: str, job: ChatJob, on_end: OnEnd,
                    on_cut: OnCut, stop: anyio.Event | None, stop_grace_s: float) -> None:
        """Run the answer detached; its log exists when this returns."""
        if self._group is None:
            raise RuntimeError("the answers' task group is not running")
        await self.store.open(stream_id, tenant, self.live_ttl_s)
        run = _Run(stream_id, job)
        self._runs[stream_id] = run
        # Named: anyio works out a name from the callable otherwise, on every answer.
        self._group.start_soon(self._run, run, on_end, on_cut, stop, stop_grace_s,
                               name="answer")

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
            if self._mirrored:
                run.poke()
            elif not run.readers:
                self._look_after(run, self.grace_s)

    async def stop(self, stream_id: str) -> None:
        """Stop the answer, wherever it runs."""
        run = self._runs.get(stream_id)
        if run is None:
            await self.store.stop(stream_id)
        elif self._mirrored:
            run.stop_asked = True
            run.poke()
        elif run.scope is not None:
            run.cut = "stopped"
            run.scope.cancel()

    async def _run(self, run: _Run, on_end: OnEnd, on_cut: OnCut,
                   stop: anyio.Event | None, stop_grace_s: float) -> None:
        log = _Log(self.store, run.stream_id, (self.live_ttl_s, self.ended_ttl_s))
        try:
            if self._mirrored:
                async with anyio.create_task_group() as group:
                    run.scope = group.cancel_scope
                    group.start_soon(self._watch, run, group.cancel_scope, name="answer_watch")
                    await run_pipeline(run.job, log, stop=stop, stop_grace_s=stop_grace_s)
                    group.cancel_scope.cancel()
            else:
                with anyio.CancelScope() as run.scope:
                    self._look_after(run, max(self.grace_s, FIRST_READER_S))
                    await run_pipeline(run.job, log, stop=stop, stop_grace_s=stop_grace_s)
            run.scope = None
            if run.timer is not None:
                run.timer.cancel()
            if run.cut is not None:
                with anyio.CancelScope(shield=True):
                    await self._end_cut(run, log.next_id, on_cut)
        except Exception:
            logger.exception("pipeline_failed", extra={"route": run.job.route})
        finally:
            self._runs.pop(run.stream_id, None)
            with anyio.CancelScope(shield=True):
                await on_end(200)

    def _look_after(self, run: _Run, delay: float) -> None:
        """In `delay` seconds, cut the answer if no reader came back by then."""
        if run.timer is not None:
            run.timer.cancel()
        run.timer = asyncio.get_running_loop().call_later(delay, self._look, run)

    def _look(self, run: _Run) -> None:
        run.timer = None
        if run.readers or run.scope is None:
            return  # a reader came; its leaving arms this again
        grace = self.grace_s if run.read else max(self.grace_s, FIRST_READER_S)
        left = grace - (time.monotonic() - run.last_seen)
        if left > 0:
            self._look_after(run, left)
            return
        run.cut = "abandoned"
        run.scope.cancel()

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
        heartbeats while it is quiet; `resume_expired` if the log cannot give them.

        A reader of an answer this process runs (`local`) waits on its log with no timer:
        the pipeline's own heartbeat wakes it when the answer is quiet. Any other renews its
        lease and wakes at least three times a lease."""
        yield retry
        here = self.store.local
        last_sent = time.monotonic()
        while True:
            if local:
                batch = await here.follow(stream_id, after)
            else:
                await self.store.hold(stream_id, LEASE_S)
                quiet_for = time.monotonic() - last_sent
                wait = min(max(0.0, self.heartbeat_s - quiet_for), LEASE_S / 3)
                batch = await self.store.read(stream_id, after, wait)
            if batch is None:
                yield expired_frame(after + 1, request_id)
                return
            if batch.frames:
                for chunk in chunks(batch.frames):
                    yield chunk
                after, last_sent = batch.last_id, time.monotonic()
            elif not batch.ended and (local or
                                      time.monotonic() - last_sent >= self.heartbeat_s):
                yield SSE_HEARTBEAT
                last_sent = time.monotonic()
            if batch.ended:
                return


def chunks(frames: tuple[bytes, ...]) -> Iterator[bytes]:
    """The frames joined into writes of at most `CHUNK_BYTES`."""
    start, size = 0, 0
    for index, frame in enumerate(frames):
        if size and size + len(frame) > CHUNK_BYTES:
            yield b"".join(frames[start:index])
            start, size = index, 0
        size += len(frame)
    yield b"".join(frames[start:])


def expired_frame(frame_id: int, request_id: str) -> bytes:
    """One `resume_expired` error frame, numbered after the last frame the reader had."""
    return SSEEncoder(max(frame_id, 0)).encode(error_frame("resume_expired", request_id=request_id,
                                      tokens_emitted=0))
