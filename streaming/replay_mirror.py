"""Answers' frames in this process, mirrored to Redis for readers on other replicas.

Readers here read the process's own log: the per-token path never waits on Redis, and a Redis
outage costs only resuming on another replica. A stream whose mirror fails (Redis down when it
starts, or an append that errs) goes on here alone, logged once as `replay_mirror_failed`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio
from redis.exceptions import RedisError

from streaming.replay import Batch, MemoryReplay, ReplayStore

logger = logging.getLogger("hello_ship.pipeline")
_FAILURES = (RedisError, OSError, TimeoutError)


class MirroredReplay:
    def __init__(self, local: MemoryReplay, remote: ReplayStore) -> None:
        self.local = local
        self.remote = remote
        self._mirrored: set[str] = set()  # streams of this process whose mirror works
        # Frames written here and not yet in Redis: per stream, its first id, frames, whether
        # they end it, and their time to live. One task writes them all (`flush_forever`).
        self._pending: dict[str, tuple[int, list[bytes], bool, float]] = {}
        self._wake = anyio.Event()

    def _lost(self, stream_id: str, operation: str, exc: BaseException) -> None:
        if stream_id in self._mirrored:
            self._mirrored.discard(stream_id)
            logger.warning("replay_mirror_failed", extra={
                "stream_id": stream_id, "operation": operation,
                "error_class": type(exc).__name__})

    async def open(self, stream_id: str, tenant: str, ttl_s: float) -> None:
        await self.local.open(stream_id, tenant, ttl_s)
        self._mirrored.add(stream_id)
        try:
            await self.remote.open(stream_id, tenant, ttl_s)
        except _FAILURES as exc:
            self._lost(stream_id, "open", exc)

    async def append(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                     ended: bool, ttl_s: float) -> None:
        self.append_now(stream_id, first_id, frames, ended, ttl_s)

    def append_now(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                   ended: bool, ttl_s: float) -> None:
        """Readers here have the frames at once; Redis gets them from the flusher, so the
        per-token path never waits on it."""
        self.local.append_now(stream_id, first_id, frames, ended, ttl_s)
        if stream_id not in self._mirrored:
            return
        pending = self._pending.get(stream_id)
        if pending is None:
            self._pending[stream_id] = (first_id, list(frames), ended, ttl_s)
        else:
            pending[1].extend(frames)
            self._pending[stream_id] = (pending[0], pending[1], ended, ttl_s)
        self._wake.set()

    async def flush_forever(self) -> None:
        """Write what is pending to Redis, all of each stream's frames in one call."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            pending, self._pending = self._pending, {}
            for stream_id, (first_id, frames, ended, ttl_s) in pending.items():
                if stream_id not in self._mirrored:
                    continue
                try:
                    await self.remote.append(stream_id, first_id, frames, ended, ttl_s)
                except _FAILURES as exc:
                    self._lost(stream_id, "append", exc)
                if ended:
                    self._mirrored.discard(stream_id)  # its mirror expires by itself

    async def keep(self, stream_id: str, ttl_s: float) -> None:
        await self.local.keep(stream_id, ttl_s)
        if stream_id in self._mirrored:
            try:
                await self.remote.keep(stream_id, ttl_s)
            except _FAILURES as exc:
                self._lost(stream_id, "keep", exc)

    async def _here(self, stream_id: str) -> bool:
        return await self.local.tenant(stream_id) is not None

    async def read(self, stream_id: str, after: int, wait_s: float) -> Batch | None:
        if await self._here(stream_id):
            return await self.local.read(stream_id, after, wait_s)
        try:
            return await self.remote.read(stream_id, after, wait_s)
        except _FAILURES:
            return None  # that resume cannot be served: the reader is told so

    async def tenant(self, stream_id: str) -> str | None:
        tenant = await self.local.tenant(stream_id)
        if tenant is not None:
            return tenant
        try:
            return await self.remote.tenant(stream_id)
        except _FAILURES:
            return None

    async def hold(self, stream_id: str, lease_s: float) -> None:
        if await self._here(stream_id):
            await self.local.hold(stream_id, lease_s)
            return
        # On failure the owner may cut the answer after its grace: the next read says so.
        with contextlib.suppress(*_FAILURES):
            await self.remote.hold(stream_id, lease_s)

    async def attended(self, stream_id: str) -> bool:
        return (await self.local.attended(stream_id)
                or await self._mirror_says(stream_id, self.remote.attended))

    async def stop(self, stream_id: str) -> None:
        if await self._here(stream_id):
            await self.local.stop(stream_id)
        else:
            await self.remote.stop(stream_id)  # a failure is the caller's to report

    async def stop_asked(self, stream_id: str) -> bool:
        return (await self.local.stop_asked(stream_id)
                or await self._mirror_says(stream_id, self.remote.stop_asked))

    async def _mirror_says(self, stream_id: str,
                           question: Callable[[str], Awaitable[bool]]) -> bool:
        """What the mirror answers for one of this process's streams; no, when it cannot."""
        if stream_id not in self._mirrored:
            return False
        try:
            return await question(stream_id)
        except _FAILURES:
            return False

    async def aclose(self) -> None:
        await self.local.aclose()
        await self.remote.aclose()
