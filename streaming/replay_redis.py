"""Each answer's frames in a Redis Stream, so a reader that comes back resumes on any replica.

The contract is `streaming.replay.ReplayStore`; `MemoryReplay` there is the reference. One
answer has four keys, all under one Redis Cluster hash tag (the stream id in braces), so they
share a slot and one Lua script may touch them all:

    {prefix}:replay:{<stream_id>}:meta   hash: tenant, next (the id of the next frame), ended
    {prefix}:replay:{<stream_id>}:log    the Stream: frame N is entry `1-{N+1}`, field `f`
                                         (the SSE bytes); the terminal frame also has `e`
    {prefix}:replay:{<stream_id>}:lease  a reader's lease (SET PX lease_s)
    {prefix}:replay:{<stream_id>}:stop   the stop request

`open` writes the meta, `append` and `keep` renew the TTL of meta, log and stop together: an
owner that dies leaves nothing behind `ttl_s` after its last renewal. The lease key lives its
own `lease_s`. Without the meta a log is gone, whatever else is left: `append` does not bring
it back, and `attended`, `stop_asked` and `tenant` answer as for a gone log.

Round trips: `append` is one script call, whatever the number of frames (the per-token path);
`read` is one script call when frames are there (or the answer ended), and one blocking XREAD
more when it has to wait: XREAD wakes as soon as any replica appends. Only when that wait
times out does a third call look again (the log may be gone, or ended without a frame). The
waits run on a second connection pool with no socket timeout of its own, guarded by
`wait_s + timeout_s` and Redis's own lateness (it times a BLOCK out on its clock tick, up to
1/hz = 100 ms late), so a 15 s wait does not trip the 0.5 s command timeout; each reader
waiting holds one connection of that pool for the wait.

Redis errors and timeouts propagate as `redis.exceptions.RedisError` subclasses (a wait that
overruns its guard raises `redis.exceptions.TimeoutError`); the caller decides what a reader
or an owner does without its replay. A broken pooled connection is retried once; a timeout is
not (an `append` retried anyway is harmless: frames whose ids are already kept are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.replay import Batch

# KEYS: meta, log, lease, stop. ARGV: tenant, ttl_ms.
_OPEN = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'next', 0, 'ended', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: meta, log, stop. ARGV: ttl_ms, max_frames, ended (0|1), first_id, frame, frame, ...
# Frames below `next` are kept already (a retried append): skipped, so ids stay increasing.
_APPEND = """
local nxt = redis.call('HGET', KEYS[1], 'next')
if not nxt then return 0 end
nxt = tonumber(nxt)
local first = tonumber(ARGV[4])
local count = #ARGV - 4
local ended = ARGV[3] == '1'
local added = false
for i = 1, count do
  local id = first + i - 1
  if id >= nxt then
    local entry = string.format('1-%d', id + 1)
    if ended and i == count then
      redis.call('XADD', KEYS[2], entry, 'f', ARGV[4 + i], 'e', '1')
    else
      redis.call('XADD', KEYS[2], entry, 'f', ARGV[4 + i])
    end
    nxt = id + 1
    added = true
  end
end
if added then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[2])
end
if ended then
  redis.call('HSET', KEYS[1], 'next', nxt, 'ended', 1)
else
  redis.call('HSET', KEYS[1], 'next', nxt)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
"""

# KEYS: meta, log, stop. ARGV: ttl_ms. Like MemoryReplay: never shortens what is left.
_KEEP = """
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return 0 end
if left >= 0 and left < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return 1
"""

# KEYS: meta, log. ARGV: want (the frame id after the one asked after), its entry id.
# nil: gone, or frame `want` was kept once and is no longer (trimmed). Else {ended, entries}.
_READ = """
local meta = redis.call('HMGET', KEYS[1], 'next', 'ended')
if not meta[1] then return false end
local entries = redis.call('XRANGE', KEYS[2], ARGV[2], '+')
if #entries > 0 then
  if entries[1][1] ~= ARGV[2] then return false end
elseif tonumber(ARGV[1]) < tonumber(meta[1]) then
  return false
end
return {meta[2], entries}
"""

# KEYS: meta, stop. The request lives as long as the log.
_STOP = """
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return 0 end
if left > 0 then
  redis.call('SET', KEYS[2], '1', 'PX', left)
else
  redis.call('SET', KEYS[2], '1')
end
return 1
"""


# Redis times out a blocked client on its clock tick (hz 10 by default): up to 100 ms late.
_BLOCK_LATENESS_S = 0.25


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _raw(response: Any, **_options: Any) -> Any:
    return response


def _xread_entries(reply: Any) -> list[Any]:
    """The entries of an XREAD reply on one stream, unparsed: `[id, [field, value, ...]]`.
    RESP3 answers a map of streams, RESP2 a list of `[stream, entries]`; nothing came: nil."""
    streams = reply.values() if isinstance(reply, dict) else [pair[1] for pair in reply or ()]
    return [entry for entries in streams for entry in entries]


def _frame_id(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[2]) - 1


def _fields(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisReplay:
    """`ReplayStore` in Redis Streams: at most `max_frames` frames a log (exact MAXLEN); a
    resume that needs a frame trimmed away gets None, as from `MemoryReplay`."""

    def __init__(self, url: str, *, prefix: str = "hello-ship", timeout_s: float = 0.5,
                 max_frames: int = 4096) -> None:
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry,
            health_check_interval=30)
        # XREAD BLOCK waits longer than any command may take: its own pool, no socket
        # timeout; `read` bounds each wait itself.
        self._waits = Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=30)
        self._waits.set_response_callback("XREAD", _raw)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._max_frames = max_frames
        self._open = self._redis.register_script(_OPEN)
        self._append = self._redis.register_script(_APPEND)
        self._keep = self._redis.register_script(_KEEP)
        self._read = self._redis.register_script(_READ)
        self._stop = self._redis.register_script(_STOP)

    def _key(self, stream_id: str, part: str) -> str:
        # The stream id in braces is a Redis Cluster hash tag: one answer's keys, one slot.
        return f"{self._prefix}:replay:{{{stream_id}}}:{part}"

    async def open(self, stream_id: str, tenant: str, ttl_s: float) -> None:
        keys = [self._key(stream_id, part) for part in ("meta", "log", "lease", "stop")]
        await self._open(keys=keys, args=[tenant, _ms(ttl_s)])

    async def append(self, stream_id: str, first_id: int, frames: Sequence[bytes],
                     ended: bool, ttl_s: float) -> None:
        keys = [self._key(stream_id, part) for part in ("meta", "log", "stop")]
        args: list[bytes | int] = [_ms(ttl_s), self._max_frames, int(ended), first_id, *frames]
        await self._append(keys=keys, args=args)

    async def keep(self, stream_id: str, ttl_s: float) -> None:
        keys = [self._key(stream_id, part) for part in ("meta", "log", "stop")]
        await self._keep(keys=keys, args=[_ms(ttl_s)])

    async def _look(self, stream_id: str, after: int) -> Batch | None:
        want = after + 1
        reply = await self._read(keys=[self._key(stream_id, "meta"), self._key(stream_id, "log")],
                                 args=[want, f"1-{want + 1}"])
        if reply is None:
            return None
        ended, entries = reply
        frames = tuple(_fields(fields)[b"f"] for _, fields in entries)
        return Batch(frames, after + len(frames), ended == b"1")

    async def read(self, stream_id: str, after: int, wait_s: float) -> Batch | None:
        if after < -1:
            return None  # frames before 0 were never kept
        batch = await self._look(stream_id, after)
        if batch is None or batch.frames or batch.ended or wait_s <= 0:
            return batch
        log = self._key(stream_id, "log")
        with anyio.move_on_after(wait_s + self._timeout_s + _BLOCK_LATENESS_S) as guard:
            reply = await self._waits.xread({log: f"1-{after + 1}"}, block=_ms(wait_s))
        if guard.cancelled_caught:
            raise RedisTimeoutError(f"XREAD BLOCK {_ms(wait_s)} got no answer in time")
        entries = _xread_entries(reply)
        if not entries:
            return await self._look(stream_id, after)  # nothing came: gone, or still there
        if _frame_id(entries[0][0]) != after + 1:
            return None  # trimmed past the reader while it waited
        fields = [_fields(flat) for _, flat in entries]
        return Batch(tuple(f[b"f"] for f in fields), after + len(fields),
                     any(b"e" in f for f in fields))

    async def tenant(self, stream_id: str) -> str | None:
        tenant = await self._redis.hget(self._key(stream_id, "meta"), "tenant")
        return tenant.decode() if isinstance(tenant, bytes) else tenant

    async def hold(self, stream_id: str, lease_s: float) -> None:
        await self._redis.set(self._key(stream_id, "lease"), b"1", px=_ms(lease_s))

    async def attended(self, stream_id: str) -> bool:
        # Both keys, in one command: a lease on a gone log attends nothing.
        found = await self._redis.exists(self._key(stream_id, "meta"),
                                         self._key(stream_id, "lease"))
        return int(found) == 2

    async def stop(self, stream_id: str) -> None:
        await self._stop(keys=[self._key(stream_id, "meta"), self._key(stream_id, "stop")])

    async def stop_asked(self, stream_id: str) -> bool:
        found = await self._redis.exists(self._key(stream_id, "meta"),
                                         self._key(stream_id, "stop"))
        return int(found) == 2

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._waits.aclose()
