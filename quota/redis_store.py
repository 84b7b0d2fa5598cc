"""The shared quota store: limits in Redis, so every replica counts against the same numbers.

Each check-and-update is one Lua script, atomic on the server; every key expires on its own
(rate windows after a minute, day ledgers after the retention period). A request whose
replica dies before settling holds its stream slot and reservation only until its lease lapses
(the longest a request can live): the next admission gives both back. Redis errors and
timeouts become `StoreUnavailable`, never a crash; the caller decides whether that admits or
refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from quota.days import DAY_S
from quota.ledger import (
    ADMITTED,
    RATE_WINDOW_S,
    Ask,
    DayUsage,
    Limits,
    Refusal,
    Spend,
    StoreUnavailable,
    Verdict,
)

_REFUSALS = {1: Refusal.TENANT_RPM, 2: Refusal.USER_RPM, 3: Refusal.STREAMS,
             4: Refusal.TOKEN_BUDGET, 5: Refusal.USD_BUDGET}
_LEDGER_FIELDS = ("requests", "input_tokens", "output_tokens", "spent_nano_usd",
                  "reserved_tokens", "reserved_nano_usd")


def _script(name: str) -> str:
    return files("quota").joinpath("lua", name).read_text()


class RedisStore:
    def __init__(self, url: str, *, prefix: str, timeout_s: float, lease_s: float,
                 retention_days: int) -> None:
        # One quick retry on a broken connection (a pooled one is stale after a Redis restart),
        # never on a timeout: the script may have run, and running it twice would charge twice.
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=30)
        self._prefix = prefix
        self._deadline_s = timeout_s * 3
        self._lease_ms = int(lease_s * 1000)
        self._ledger_ttl_s = retention_days * DAY_S
        self._admit = self._redis.register_script(_script("admit.lua"))
        self._finish = self._redis.register_script(_script("finish.lua"))

    def _key(self, tenant: str, *parts: str) -> str:
        # The tenant in braces is a Redis Cluster hash tag: one request's keys share a slot.
        return ":".join((self._prefix, "{" + tenant + "}", *parts))

    async def _call(self, operation: Any) -> Any:
        try:
            with anyio.fail_after(self._deadline_s):
                return await operation
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def admit(self, ask: Ask, limits: Limits, now: float) -> Verdict:
        keys = [self._key(ask.tenant, "rpm"),
                self._key(ask.tenant, "user", ask.user or "", "rpm"),
                self._key(ask.tenant, "streams"),
                self._key(ask.tenant, "day", ask.day),
                self._key(ask.tenant, "holds")]
        user_rpm = limits.user_rpm if limits.user_rpm is not None and ask.user else 0
        args: list[str | int] = [int(now * 1000), ask.ticket, limits.rpm, user_rpm, limits.streams,
                self._lease_ms, int(RATE_WINDOW_S * 1000), ask.tokens, ask.nano_usd,
                limits.daily_tokens,
                -1 if limits.daily_nano_usd is None else limits.daily_nano_usd,
                self._ledger_ttl_s, ask.day]
        refusal, wait_ms, held = await self._call(self._admit(keys=keys, args=args))
        if not refusal:
            return ADMITTED
        return Verdict(_REFUSALS[int(refusal)], int(wait_ms) / 1000, bool(held))

    async def finish(self, ask: Ask, spent: Spend) -> None:
        keys = [self._key(ask.tenant, "streams"), self._key(ask.tenant, "day", ask.day),
                self._key(ask.tenant, "holds")]
        args: list[str | int] = [ask.ticket, ask.tokens, ask.nano_usd, spent.input_tokens,
                                 spent.output_tokens, spent.nano_usd, self._ledger_ttl_s]
        await self._call(self._finish(keys=keys, args=args))

    async def usage(self, tenant: str, days: Sequence[str]) -> list[DayUsage]:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hmget(self._key(tenant, "day", day), _LEDGER_FIELDS)
                return await pipe.execute()

        rows = await self._call(read())
        return [DayUsage(day, *(int(value or 0) for value in row))
                for day, row in zip(days, rows, strict=True)]

    async def aclose(self) -> None:
        await self._redis.aclose()
