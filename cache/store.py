"""Where cached answers are kept: this process (`MemoryAnswers`), or Redis shared by the
replicas (`cache.redis_store.RedisAnswers`). Both bound each tenant's entries and expire
them after the TTL; neither ever answers one tenant with another's entry, since every key
is the tenant's own."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from cache.entry import Entry
from cache.near import IndexRecord


class StoreError(Exception):
    """The store could not be reached or answered in time: a miss, or a write dropped."""


class AnswerStore(Protocol):
    async def get(self, tenant: str, key: str) -> Entry | None: ...

    async def put(self, tenant: str, record: IndexRecord, entry: Entry) -> None: ...

    async def news(self, tenant: str) -> list[IndexRecord]:
        """Index records other replicas wrote since the last call for this tenant."""
        ...

    async def clear(self, tenant: str) -> int:
        """Forget the tenant's entries; how many there were (as far as the store can tell)."""
        ...

    async def aclose(self) -> None: ...


class MemoryAnswers:
    """Per tenant, least recently used first out, at most `max_entries`."""

    def __init__(self, max_entries: int, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._tenants: dict[str, OrderedDict[str, Entry]] = {}

    async def get(self, tenant: str, key: str) -> Entry | None:
        entries = self._tenants.get(tenant)
        entry = entries.get(key) if entries is not None else None
        if entry is None or entries is None:
            return None
        if entry.created_at + self._ttl_s <= self._clock():
            del entries[key]
            return None
        entries.move_to_end(key)
        return entry

    async def put(self, tenant: str, record: IndexRecord, entry: Entry) -> None:
        entries = self._tenants.setdefault(tenant, OrderedDict())
        entries[record.key] = entry
        entries.move_to_end(record.key)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    async def news(self, tenant: str) -> list[IndexRecord]:
        return []  # one process: its own index already has every entry

    async def clear(self, tenant: str) -> int:
        return len(self._tenants.pop(tenant, {}))

    async def aclose(self) -> None:
        self._tenants.clear()
