"""The replay contract (`streaming.replay.ReplayStore`), the same tests for both stores: the
in-process `MemoryReplay` and `RedisReplay` on a real redis-server. Then what only Redis does:
two replicas on one log, nothing left behind, and the ways a Redis call can go wrong."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streaming.replay import Batch, MemoryReplay, ReplayStore
from streaming.replay_redis import RedisReplay
from tests.redis_server import RedisServer

MAX_FRAMES = 8
TTL_S = 30.0
SID = "s_1"


def frame(n: int) -> bytes:
    return f'id: {n}\nevent: token\ndata: {{"type":"token","token":"t{n}"}}\n\n'.encode()


def frames(first: int, last: int) -> tuple[bytes, ...]:
    """Frames `first` to `last`, both included."""
    return tuple(frame(n) for n in range(first, last + 1))


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ReplayStore]:
    if request.param == "memory":
        replay: ReplayStore = MemoryReplay(max_frames=MAX_FRAMES)
    else:
        server: RedisServer = request.getfixturevalue("shared_redis")
        replay = RedisReplay(server.url, prefix=prefix(), max_frames=MAX_FRAMES)
    try:
        yield replay
    finally:
        await replay.aclose()


async def opened(store: ReplayStore, *, upto: int = -1, ended: bool = False,
                 ttl_s: float = TTL_S) -> ReplayStore:
    """`SID` opened for acme, with frames 0 to `upto` appended."""
    await store.open(SID, "acme", ttl_s)
    if upto >= 0:
        await store.append(SID, 0, frames(0, upto), ended, ttl_s)
    return store


# The contract, on both stores.

async def test_frames_come_back_after_every_id(store: ReplayStore) -> None:
    await opened(store)
    assert await store.read(SID, -1, 0) == Batch((), -1, False)
    await store.append(SID, 0, frames(0, 2), False, TTL_S)
    await store.append(SID, 3, frames(3, 3), False, TTL_S)
    await store.append(SID, 4, frames(4, 5), False, TTL_S)
    for after in range(-1, 6):
        assert await store.read(SID, after, 0) == Batch(frames(after + 1, 5), 5, False)


async def test_a_waiting_reader_wakes_when_frames_come(store: ReplayStore) -> None:
    await opened(store, upto=1)
    got: list[Batch | None] = []

    async def reader() -> None:
        got.append(await store.read(SID, 1, 5))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        await anyio.sleep(0.05)
        assert got == []  # it waits
        await store.append(SID, 2, frames(2, 3), False, TTL_S)
    assert got == [Batch(frames(2, 3), 3, False)]
    assert time.monotonic() - started < 1  # woken, not timed out


async def test_a_wait_in_which_nothing_comes_ends_empty(store: ReplayStore) -> None:
    await opened(store, upto=2)
    started = time.monotonic()
    assert await store.read(SID, 2, 0.15) == Batch((), 2, False)
    assert 0.1 <= time.monotonic() - started < 0.8
    assert await store.read(SID, 2, 0.05) == Batch((), 2, False)  # again, same answer


async def test_the_terminal_frame_ends_the_answer(store: ReplayStore) -> None:
    await opened(store, upto=2)
    await store.append(SID, 3, frames(3, 4), True, TTL_S)
    assert await store.read(SID, -1, 0) == Batch(frames(0, 4), 4, True)
    assert await store.read(SID, 3, 0) == Batch(frames(4, 4), 4, True)
    started = time.monotonic()
    assert await store.read(SID, 4, 5) == Batch((), 4, True)  # nothing to wait for
    assert time.monotonic() - started < 0.5


async def test_a_waiting_reader_sees_the_terminal_frame_end_the_answer(
        store: ReplayStore) -> None:
    await opened(store, upto=0)
    got: list[Batch | None] = []

    async def reader() -> None:
        got.append(await store.read(SID, 0, 5))

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        await anyio.sleep(0.05)
        await store.append(SID, 1, frames(1, 2), True, TTL_S)
    assert got == [Batch(frames(1, 2), 2, True)]


async def test_a_resume_past_the_trimmed_frames_is_too_late(store: ReplayStore) -> None:
    await opened(store, upto=11)  # 12 frames, 8 kept: 4 to 11
    for after in (-1, 0, 2):
        assert await store.read(SID, after, 0) is None
    assert await store.read(SID, 3, 0) == Batch(frames(4, 11), 11, False)
    assert await store.read(SID, 11, 0) == Batch((), 11, False)
    assert await store.read(SID, -2, 0) is None


async def test_frames_trimmed_while_a_reader_waits_end_its_resume(store: ReplayStore) -> None:
    await opened(store, upto=3)
    got: list[Batch | None] = []

    async def reader() -> None:
        got.append(await store.read(SID, 3, 5))

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        await anyio.sleep(0.05)
        await store.append(SID, 4, frames(4, 4 + MAX_FRAMES + 1), False, TTL_S)  # 4, 5 trimmed
    assert got == [None]


async def test_a_log_is_gone_after_its_ttl(store: ReplayStore) -> None:
    await opened(store, upto=2, ttl_s=0.3)
    await store.hold(SID, 5)
    await store.stop(SID)
    await anyio.sleep(0.4)
    assert await store.read(SID, -1, 0) is None
    assert await store.read(SID, 2, 0.05) is None
    assert await store.tenant(SID) is None
    assert not await store.attended(SID)
    assert not await store.stop_asked(SID)
    await store.append(SID, 3, frames(3, 3), False, 0.3)  # a late owner brings nothing back
    assert await store.read(SID, -1, 0) is None
    await store.keep(SID, 0.3)
    assert await store.tenant(SID) is None


async def test_append_and_keep_keep_the_log(store: ReplayStore) -> None:
    await opened(store, ttl_s=0.2)  # gone at 0.2 s unless kept
    await anyio.sleep(0.1)
    await store.append(SID, 0, frames(0, 0), False, 0.2)  # 0.3 s
    await anyio.sleep(0.1)
    await store.keep(SID, 0.3)  # 0.5 s
    await anyio.sleep(0.05)
    await store.keep(SID, 0.05)  # keep never shortens what is left: still 0.5 s
    await anyio.sleep(0.15)  # 0.4 s
    assert await store.read(SID, -1, 0) == Batch(frames(0, 0), 0, False)
    assert await store.tenant(SID) == "acme"
    await anyio.sleep(0.2)  # 0.6 s
    assert await store.tenant(SID) is None


async def test_a_lease_attends_until_it_lapses(store: ReplayStore) -> None:
    await opened(store, upto=0)
    assert not await store.attended(SID)
    await store.hold(SID, 0.2)
    assert await store.attended(SID)
    await anyio.sleep(0.1)
    await store.hold(SID, 0.2)  # renewed
    await anyio.sleep(0.15)
    assert await store.attended(SID)
    await anyio.sleep(0.1)
    assert not await store.attended(SID)
    assert not await store.attended("s_other")


async def test_stop_is_asked_of_one_answer(store: ReplayStore) -> None:
    await opened(store, upto=0)
    await store.open("s_other", "acme", TTL_S)
    assert not await store.stop_asked(SID)
    await store.stop(SID)
    assert await store.stop_asked(SID)
    assert not await store.stop_asked("s_other")
    await store.stop("s_unknown")
    assert not await store.stop_asked("s_unknown")


async def test_the_tenant_is_kept_and_a_reopened_log_starts_afresh(store: ReplayStore) -> None:
    await opened(store, upto=3, ended=True)
    await store.hold(SID, 5)
    await store.stop(SID)
    assert await store.tenant(SID) == "acme"
    assert await store.tenant("s_unknown") is None
    await store.open(SID, "globex", TTL_S)
    assert await store.tenant(SID) == "globex"
    assert await store.read(SID, -1, 0) == Batch((), -1, False)
    assert not await store.stop_asked(SID)
    await store.append(SID, 0, frames(0, 1), False, TTL_S)
    assert await store.read(SID, -1, 0) == Batch(frames(0, 1), 1, False)


# Redis only.

@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    return shared_redis.url


async def test_one_replica_appends_while_another_follows(redis_url: str) -> None:
    shared = prefix()
    owner = RedisReplay(redis_url, prefix=shared)
    other = RedisReplay(redis_url, prefix=shared)
    try:
        await owner.open(SID, "acme", TTL_S)
        await owner.append(SID, 0, frames(0, 1), False, TTL_S)
        got: list[bytes] = []

        async def follow() -> None:
            after, ended = -1, False
            while not ended:
                batch = await other.read(SID, after, 5)
                assert batch is not None
                got.extend(batch.frames)
                after, ended = batch.last_id, batch.ended

        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await other.hold(SID, 5)
            await other.stop(SID)
            assert await owner.attended(SID)
            assert await owner.stop_asked(SID)
            for n in range(2, 6):
                await anyio.sleep(0.02)
                await owner.append(SID, n, frames(n, n), n == 5, TTL_S)
        assert got == list(frames(0, 5))
        assert await other.tenant(SID) == "acme"
    finally:
        await owner.aclose()
        await other.aclose()


async def test_every_key_expires_and_none_is_left(redis_url: str) -> None:
    own = prefix()
    replay = RedisReplay(redis_url, prefix=own)
    client = Redis.from_url(redis_url)
    try:
        await replay.open(SID, "acme", 0.3)
        await replay.append(SID, 0, frames(0, 2), True, 0.3)
        await replay.hold(SID, 0.2)
        await replay.stop(SID)
        await replay.keep(SID, 0.3)
        keys = sorted([key async for key in client.scan_iter(match=f"{own}:*")])
        assert keys == [f"{own}:replay:{{{SID}}}:{part}".encode()
                        for part in ("lease", "log", "meta", "stop")]
        assert [0 < await client.pttl(key) <= 300 for key in keys] == [True] * 4
        await anyio.sleep(0.4)
        assert [key async for key in client.scan_iter(match=f"{own}:*")] == []
    finally:
        await client.aclose()
        await replay.aclose()


async def test_a_retried_append_keeps_each_frame_once(redis_url: str) -> None:
    replay = RedisReplay(redis_url, prefix=prefix())
    try:
        await replay.open(SID, "acme", TTL_S)
        await replay.append(SID, 0, frames(0, 2), False, TTL_S)
        await replay.append(SID, 0, frames(0, 2), False, TTL_S)  # its reply was lost
        await replay.append(SID, 2, frames(2, 4), True, TTL_S)
        assert await replay.read(SID, -1, 0) == Batch(frames(0, 4), 4, True)
    finally:
        await replay.aclose()


async def test_a_wait_may_outlast_the_command_timeout(redis_url: str) -> None:
    replay = RedisReplay(redis_url, prefix=prefix(), timeout_s=0.05)
    try:
        await replay.open(SID, "acme", TTL_S)
        started = time.monotonic()
        assert await replay.read(SID, -1, 0.3) == Batch((), -1, False)
        assert time.monotonic() - started >= 0.25
    finally:
        await replay.aclose()


async def test_a_reader_cancelled_in_its_wait_leaves_the_next_read_sound(
        redis_url: str) -> None:
    replay = RedisReplay(redis_url, prefix=prefix())
    try:
        await replay.open(SID, "acme", TTL_S)
        for _ in range(3):
            with anyio.move_on_after(0.05):
                await replay.read(SID, -1, 5)
        await replay.append(SID, 0, frames(0, 0), False, TTL_S)
        assert await replay.read(SID, -1, 5) == Batch(frames(0, 0), 0, False)
        assert await replay.read(SID, 0, 0.05) == Batch((), 0, False)
    finally:
        await replay.aclose()


async def test_redis_errors_reach_the_caller() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    replay = RedisReplay(f"redis://127.0.0.1:{port}/0", prefix=prefix())
    try:
        with pytest.raises(RedisError):
            await replay.open(SID, "acme", TTL_S)
        with pytest.raises(RedisError):
            await replay.read(SID, -1, 0.1)
    finally:
        await replay.aclose()
