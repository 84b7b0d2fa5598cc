"""Cached answers in Redis, shared by every replica.

Per tenant, under one Redis Cluster hash tag (the tenant in braces):

    {prefix}:cache:{<tenant>}:a:<key>   the answer (JSON), SET with the TTL
    {prefix}:cache:{<tenant>}:log       a Stream of index records (key, scope, age, MinHash
                                        signature, vector), capped near `max_entries`

An exact lookup is one GET. For near-duplicates each replica keeps its own index
(`cache.near`), brought up to date from the log by one XREAD before it is searched; a
candidate's answer is then one GET, which finds nothing once the entry expired or was
cleared. Every error is raised as `StoreError`: the caller treats it as a miss or a dropped
write, never as a failed request.
"""

from __future__ import annotations

import re
from array import array
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cache.entry import Entry
from cache.lexical import NUM_PERM
from cache.near import IndexRecord
from cache.store import StoreError

_FAILURES = (RedisError, OSError, TimeoutError)
# Index records read per lookup: a replica catching up on a large log does so over a few
# lookups, never in one long read.
NEWS_PER_READ = 2000
_GLOB = re.compile(r"([*?\[\]\\])")


class RedisAnswers:
    def __init__(self, url: str, *, prefix: str, timeout_s: float, ttl_s: float,
                 max_entries: int) -> None:
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._redis = Redis.from_url(url, socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s, retry=retry,
                                     health_check_interval=30)
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._max_entries = max_entries
        self._read_to: dict[str, bytes] = {}  # tenant -> the last log entry read

    def _base(self, tenant: str) -> str:
        return f"{self._prefix}:cache:{{{tenant}}}"

    async def get(self, tenant: str, key: str) -> Entry | None:
        try:
            raw = await self._redis.get(f"{self._base(tenant)}:a:{key}")
        except _FAILURES as exc:
            raise StoreError(type(exc).__name__) from exc
        return None if raw is None else Entry.decode(raw)

    async def put(self, tenant: str, record: IndexRecord, entry: Entry) -> None:
        base = self._base(tenant)
        fields: dict[Any, Any] = {"k": record.key, "s": record.scope, "t": repr(record.created_at),
                                  "g": array("Q", record.signature).tobytes()}
        if record.vector is not None:
            fields["v"] = array("f", record.vector).tobytes()
            fields["m"] = record.model or ""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(f"{base}:a:{record.key}", entry.encode(), px=self._ttl_ms)
                pipe.xadd(f"{base}:log", fields, maxlen=self._max_entries, approximate=True)
                pipe.pexpire(f"{base}:log", self._ttl_ms)
                await pipe.execute()
        except _FAILURES as exc:
            raise StoreError(type(exc).__name__) from exc

    async def news(self, tenant: str) -> list[IndexRecord]:
        last = self._read_to.get(tenant, b"0-0")
        try:
            found = await self._redis.xread({f"{self._base(tenant)}:log": last},
                                            count=NEWS_PER_READ)
        except _FAILURES as exc:
            raise StoreError(type(exc).__name__) from exc
        records = []
        streams: Any = found or []  # RESP2: [[stream, [(id, {field: value})]]]
        for _stream, entries in streams:
            for entry_id, fields in entries:
                last = entry_id
                record = _record(fields)
                if record is not None:
                    records.append(record)
        self._read_to[tenant] = last
        return records

    async def clear(self, tenant: str) -> int:
        pattern = _GLOB.sub(r"\\\1", self._base(tenant)) + ":*"
        cleared = 0
        try:
            batch: list[bytes] = []
            async for name in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(name)
                cleared += b":a:" in name  # an answer; the log is not an entry
                if len(batch) == 500:
                    await self._redis.unlink(*batch)
                    batch = []
            if batch:
                await self._redis.unlink(*batch)
        except _FAILURES as exc:
            raise StoreError(type(exc).__name__) from exc
        self._read_to.pop(tenant, None)
        return cleared

    async def aclose(self) -> None:
        await self._redis.aclose()


def _record(fields: dict[bytes, bytes]) -> IndexRecord | None:
    """One log entry; None if it is not one this version wrote (skipped, never fatal)."""
    try:
        signature = array("Q")
        signature.frombytes(fields[b"g"])
        if len(signature) != NUM_PERM:
            return None
        vector = None
        if b"v" in fields:
            vector = array("f")
            vector.frombytes(fields[b"v"])
        return IndexRecord(fields[b"k"].decode(), fields[b"s"].decode(),
                           float(fields[b"t"]), tuple(signature),
                           vector.tolist() if vector is not None else None,
                           fields[b"m"].decode() if b"m" in fields else None)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
