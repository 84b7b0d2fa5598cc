"""Each answer's frames, kept while it runs and for a grace after, for readers that come back.

A reader that lost its connection asks for the frames after the last one it got and follows
the answer live from there: no frame twice, none missing, one terminal frame in all. Frames
are kept as the SSE bytes the reader sends, each with its `id:` line. The store here lives in
this process (one replica, or sticky sessions); `streaming.replay_redis` keeps them in Redis
Streams, so a reconnect sent to another replica resumes there.

The process running an answer is its owner: it appends, keeps the log alive while the answer
runs, and asks `attended` whether any reader, on any replica, holds a lease on it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio


@dataclass(frozen=True, slots=True)
class Batch:
    """The frames after the one asked for, as far as they exist now."""

    frames: tuple[bytes, ...]
    last_id: int  # the id of the last frame in `frames`; the one asked after when empty
    ended: bool  # the answer's terminal frame is the last of `frames` (or came before)


class ReplayStore(Protocol):
    async def open(self, stream_id: str, tenant: str, ttl_s: float) -> None:
        """Start a log; it is gone `ttl_s` after the last `append` or `keep` unless renewed."""

    async def append(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                     ended: bool, ttl_s: float) -> None:
        """Frames `first_id`, `first_id + 1`, ...; `ended`: the last is the terminal frame."""

    async def keep(self, stream_id: str, ttl_s: float) -> None:
        """The owner is alive and the answer still runs: keep the log `ttl_s` longer."""

    async def read(self, stream_id: str, after: int, wait_s: float) -> Batch | None:
        """Frames with ids above `after`, waiting up to `wait_s` for the first of them; an
        empty batch if none came. None if the log is gone, or no longer holds frame
        `after + 1` (it was trimmed): that resume is too late."""

    async def tenant(self, stream_id: str) -> str | None:
        """Whose answer it is, or None if the log is gone."""

    async def hold(self, stream_id: str, lease_s: float) -> None:
        """A reader is attached: it renews this lease while it reads."""

    async def attended(self, stream_id: str) -> bool:
        """Whether any reader's lease is current."""

    async def stop(self, stream_id: str) -> None:
        """Ask the owner to stop the answer (DELETE); it checks `stop_asked`."""

    async def stop_asked(self, stream_id: str) -> bool: ...

    async def aclose(self) -> None: ...


class AnswerLogs(ReplayStore, Protocol):
    """The logs of the answers this process runs: written without a wait, read here from
    `local`, and from elsewhere through the store."""

    @property
    def local(self) -> MemoryReplay: ...

    def append_now(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                   ended: bool, ttl_s: float) -> None: ...


@dataclass(slots=True)
class _Log:
    tenant: str
    expires_at: float
    first_id: int = 0  # the id of frames[0]; frames before it were trimmed
    frames: list[bytes] = field(default_factory=list)
    ended: bool = False
    lease_until: float = 0.0
    stop_asked: bool = False
    # Set when the log changes; made only while a reader waits, as most appends find none.
    grew: anyio.Event | None = None

    def wake(self) -> None:
        if self.grew is not None:
            self.grew.set()
            self.grew = None

    async def changed(self, wait_s: float | None) -> None:
        """Wait for the next change, at most `wait_s` (None: however long it takes)."""
        if self.grew is None:
            self.grew = anyio.Event()
        if wait_s is None:
            await self.grew.wait()
            return
        with anyio.move_on_after(wait_s):
            await self.grew.wait()


class MemoryReplay:
    """Logs in this process. At most `max_frames` frames a log; older ones are dropped, and a
    resume that needs them gets `resume_expired`."""

    def __init__(self, max_frames: int = 4096) -> None:
        self._logs: dict[str, _Log] = {}
        self._max_frames = max_frames
        self._now = time.monotonic

    def _live(self, stream_id: str) -> _Log | None:
        log = self._logs.get(stream_id)
        if log is not None and log.expires_at <= self._now():
            del self._logs[stream_id]
            log.wake()  # readers waiting on it see it gone
            return None
        return log

    def forget_expired(self) -> None:
        """Drop the logs whose time is up: each access drops its own, and the owner of the
        store calls this now and then for the others (it goes through them all)."""
        now = self._now()
        for stream_id in [s for s, log in self._logs.items() if log.expires_at <= now]:
            self._logs.pop(stream_id).wake()

    async def open(self, stream_id: str, tenant: str, ttl_s: float) -> None:
        old = self._logs.pop(stream_id, None)
        if old is not None:
            old.wake()  # its readers see it gone, not another answer's frames
        self._logs[stream_id] = _Log(tenant, self._now() + ttl_s)

    @property
    def local(self) -> MemoryReplay:
        """Where readers in this process read: here."""
        return self

    async def append(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                     ended: bool, ttl_s: float) -> None:
        self.append_now(stream_id, first_id, frames, ended, ttl_s)

    def append_now(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                   ended: bool, ttl_s: float) -> None:
        """`append` without a wait: the pipeline writes each frame here as it makes it."""
        log = self._live(stream_id)
        if log is None:
            return
        known = log.first_id + len(log.frames)
        if known > first_id:  # a retried append adds only what is new
            frames = frames[known - first_id:]
        log.frames.extend(frames)
        surplus = len(log.frames) - self._max_frames
        if surplus > 0:
            del log.frames[:surplus]
            log.first_id += surplus
        log.ended = log.ended or ended
        log.expires_at = self._now() + ttl_s
        log.wake()

    def ping(self, stream_id: str) -> None:
        """Wake the answer's waiting readers without a frame: it has been quiet for a
        heartbeat's time, and they send one."""
        log = self._logs.get(stream_id)
        if log is not None:
            log.wake()

    async def keep(self, stream_id: str, ttl_s: float) -> None:
        log = self._live(stream_id)
        if log is not None and not log.ended:  # an ended log keeps the time its end gave it
            log.expires_at = max(log.expires_at, self._now() + ttl_s)

    async def read(self, stream_id: str, after: int, wait_s: float) -> Batch | None:
        return await self._read(stream_id, after, wait_s)

    async def follow(self, stream_id: str, after: int) -> Batch | None:
        """`read`, waiting for as long as it takes: for frames, the end, the log going, or a
        `ping` (then the batch is empty). For readers in this process, which need no timer."""
        return await self._read(stream_id, after, None)

    async def _read(self, stream_id: str, after: int, wait_s: float | None) -> Batch | None:
        log = self._live(stream_id)
        if log is None:
            return None
        start = after + 1 - log.first_id
        if start < 0 or start > len(log.frames):
            return None  # trimmed (what the reader misses is gone), or a frame never sent
        if start >= len(log.frames) and not log.ended and (wait_s is None or wait_s > 0):
            await log.changed(wait_s)
            log = self._live(stream_id)
            if log is None:
                return None
            start = after + 1 - log.first_id
            if start < 0:
                return None  # trimmed while it waited
        frames = tuple(log.frames[start:])
        return Batch(frames, after + len(frames), log.ended)

    async def tenant(self, stream_id: str) -> str | None:
        log = self._live(stream_id)
        return log.tenant if log is not None else None

    async def hold(self, stream_id: str, lease_s: float) -> None:
        log = self._live(stream_id)
        if log is not None:
            log.lease_until = self._now() + lease_s

    async def attended(self, stream_id: str) -> bool:
        log = self._live(stream_id)
        return log is not None and log.lease_until > self._now()

    async def stop(self, stream_id: str) -> None:
        log = self._live(stream_id)
        if log is not None:
            log.stop_asked = True
            log.wake()

    async def stop_asked(self, stream_id: str) -> bool:
        log = self._live(stream_id)
        return log is not None and log.stop_asked

    async def aclose(self) -> None:
        self._logs.clear()
