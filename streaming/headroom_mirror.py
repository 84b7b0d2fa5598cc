"""The routes' quota headroom shared through Redis.

Each replica learns a vendor's rate limits only from its own responses. With `REDIS_URL`,
every replica writes what it learnt once a second and reads what the others did, so a route
near its limit is passed over by all of them. A window replaces the stored one only when it
was seen later (one Lua script per route, so two replicas never undo each other). Redis down
costs the sharing, never a request: logged once as `headroom_sync_failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict

import anyio
import orjson
from redis.asyncio import Redis

from providers.headroom import Headroom
from providers.rate_limits import KINDS, Kind, Window, plausible_window

logger = logging.getLogger("hello_ship.chain")
SYNC_S = 1.0
# Refreshed by every sync: the windows outlive the last replica by an hour, no longer.
KEEP_S = 3600

# KEYS[1]: the route's hash (kind -> window JSON); ARGV: ttl, then kind, seen_at, window ...
# A stored value that cannot be read (another version's, or damaged) is replaced.
_MERGE = """
for i = 2, #ARGV, 3 do
  local known = redis.call('HGET', KEYS[1], ARGV[i])
  local ok, stored = pcall(cjson.decode, known or 'null')
  local seen = ok and type(stored) == 'table' and stored['seen_at']
  if type(seen) ~= 'number' or seen < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


class HeadroomMirror:
    def __init__(self, url: str, headrooms: Sequence[Headroom], *, prefix: str = "hello-ship",
                 timeout_s: float = 0.5) -> None:
        self._redis = Redis.from_url(url, socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s)
        self._merge = self._redis.register_script(_MERGE)
        self._headrooms = headrooms
        self._prefix = prefix
        self._written: dict[tuple[str, Kind], float] = {}  # seen_at of what is in Redis
        self._failing = False

    async def run(self) -> None:
        while True:
            await self.sync()
            await anyio.sleep(SYNC_S)

    async def sync(self) -> None:
        failure: Exception | None = None
        for headroom in self._headrooms:  # each route on its own: one failing stops no other
            try:
                await self._sync(headroom)
            except Exception as exc:  # whatever it is, it must not end the loop
                failure = exc
        if failure is not None and not self._failing:
            logger.warning("headroom_sync_failed", extra={"error_class": type(failure).__name__})
        self._failing = failure is not None

    async def _sync(self, headroom: Headroom) -> None:
        fresh = {kind: window for kind, window in headroom.windows().items()
                 if window.seen_at > self._written.get((headroom.route, kind), 0.0)}
        args: list[str | float | bytes] = [KEEP_S]
        for kind, window in fresh.items():
            args += [kind, window.seen_at, orjson.dumps(asdict(window))]
        stored = await self._merge(keys=[f"{self._prefix}:headroom:{headroom.route}"],
                                   args=args)
        for kind, window in fresh.items():
            self._written[headroom.route, kind] = window.seen_at
        headroom.merge(_windows(stored))

    async def aclose(self) -> None:
        await self._redis.aclose()


def _windows(flat: list[bytes]) -> dict[Kind, Window]:
    """What Redis holds for a route; what this version cannot read is left out."""
    windows: dict[Kind, Window] = {}
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        kind = _KIND_NAMED.get(name)
        if kind is None:
            continue
        try:
            fields = orjson.loads(value)
            resets_at = fields["resets_at"]
            window = plausible_window(
                _whole(fields["limit"]), _whole(fields["remaining"]),
                None if resets_at is None else float(resets_at), float(fields["seen_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            continue
        if window is not None:
            windows[kind] = window
    return windows


_KIND_NAMED: dict[bytes, Kind] = {kind.encode(): kind for kind in KINDS}


def _whole(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not a count")
    return value
