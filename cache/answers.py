"""The answer cache: lookups for a request, writes after its answer, and the admin clear.

A lookup tries, in order: the exact question (one store read); then near-duplicates among
the tenant's questions of the same scope, by cosine similarity of embeddings when an
embedding model is configured and answering, else by MinHash similarity of word shingles.
It never raises: a store or embedding model that fails or is slow makes a miss, and is
counted. A lookup is bounded by `lookup_timeout_s`; an embedding model that failed is left
alone for `EMBEDDING_RETRY_S`, so an outage costs lexical matching, not a timeout per request.

Writes go through a bounded queue to one background task (`run`), off every request's path;
when the queue is full a write is dropped and counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import anyio

from cache.entry import CacheHit, CacheMode, Entry, MatchKind
from cache.lexical import signature
from cache.near import IndexRecord, NearIndex
from cache.question import Question
from cache.store import AnswerStore, StoreError
from providers.embeddings import Embedder
from providers.errors import ProviderError
from telemetry.metrics import CACHE_ERRORS, CACHE_HIT_SIMILARITY, CACHE_LOOKUPS, CACHE_WRITES

logger = logging.getLogger("hello_ship.cache")

WRITE_QUEUE = 256
EMBEDDING_RETRY_S = 10.0
# Of the lookup's time, what an embedding call may take: the rest is left for lexical
# matching and the store when the model is slow.
EMBEDDING_SHARE = 0.6
# A write is off every request's path: its embedding may take longer.
WRITE_EMBEDDING_S = 5.0
# Asked once at start-up, so the SDK's client (Bedrock's loads its service model, a few hundred
# ms of CPU) is built before the first lookup, which could not wait for it.
WARM_UP_TEXT = "hello"
ERROR_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class CacheOptions:
    ttl_s: float = 3600.0
    max_entries: int = 10_000  # per tenant
    similarity: float = 0.95  # cosine of embeddings
    lexical_similarity: float = 0.8  # estimated Jaccard of word shingles
    lookup_timeout_s: float = 0.3


@dataclass(slots=True)
class CacheTicket:
    """One request's use of the cache: its question, its mode, and the embedding its lookup
    made (kept for the write, so a question is embedded once)."""

    cache: AnswerCache
    question: Question
    mode: CacheMode
    max_tokens: int
    vector: Sequence[float] | None = field(default=None, repr=False)

    @property
    def first(self) -> bool:
        """Looked up before any route is asked (FAQ mode)."""
        return self.mode == "first"

    async def lookup(self) -> CacheHit | None:
        return await self.cache.lookup(self)


@dataclass(frozen=True, slots=True)
class _Write:
    ticket: CacheTicket
    entry: Entry


class AnswerCache:
    def __init__(self, options: CacheOptions, store: AnswerStore, embedder: Embedder | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self._store = store
        self._embedder = embedder
        self._clock = clock
        self._indexes: dict[str, NearIndex] = {}  # by tenant
        self._embedding_down_until = -math.inf
        self._last_error_log: dict[str, float] = {}
        self._writes: deque[_Write] = deque()
        self._written = anyio.Event()  # set when a write is queued for the writer

    @property
    def near_kind(self) -> MatchKind:
        return "semantic" if self._embedder is not None else "lexical"

    def ticket(self, question: Question, mode: CacheMode, max_tokens: int) -> CacheTicket:
        return CacheTicket(self, question, mode, max_tokens)

    async def lookup(self, ticket: CacheTicket) -> CacheHit | None:
        """The closest usable cached answer, or None; never raises."""
        try:
            with anyio.fail_after(self.options.lookup_timeout_s):
                hit = await self._lookup(ticket)
        except (StoreError, TimeoutError) as exc:
            self._failed("lookup", exc)
            return None
        if hit is not None:
            CACHE_HIT_SIMILARITY.labels(hit.kind).observe(hit.similarity)
            logger.info("cache_hit", extra={
                "tenant_id": ticket.question.tenant, "mode": ticket.mode, "kind": hit.kind,
                "similarity": round(hit.similarity, 4), "age_s": round(hit.age_s, 1),
                "answer_route": hit.entry.route})
        return hit

    async def _lookup(self, ticket: CacheTicket) -> CacheHit | None:
        question, mode = ticket.question, ticket.mode
        now = self._clock()
        entry = await self._store.get(question.tenant, question.key)
        if entry is not None and self._usable(entry, ticket, now):
            CACHE_LOOKUPS.labels(mode, "exact", "hit").inc()
            return CacheHit(entry, "exact", 1.0, now - entry.created_at)
        CACHE_LOOKUPS.labels(mode, "exact", "miss").inc()
        index = self._index(question.tenant)
        for record in await self._store.news(question.tenant):
            index.add(self._comparable(record), now)
        ticket.vector = await self._embed(question.text,
                                          self.options.lookup_timeout_s * EMBEDDING_SHARE)
        if ticket.vector is not None:
            kind: MatchKind = "semantic"
            found = index.semantic(question.scope, ticket.vector, self.options.similarity, now)
        else:
            kind = "lexical"
            found = index.lexical(question.scope, signature(question.text),
                                  self.options.lexical_similarity, now)
        for key, similarity in found:
            entry = await self._store.get(question.tenant, key)
            if entry is None:  # expired or cleared since this replica indexed it
                index.remove(key)
            elif self._usable(entry, ticket, now):
                CACHE_LOOKUPS.labels(mode, kind, "hit").inc()
                return CacheHit(entry, kind, similarity, now - entry.created_at)
        CACHE_LOOKUPS.labels(mode, kind, "miss").inc()
        return None

    def _comparable(self, record: IndexRecord) -> IndexRecord:
        """The record as this replica may index it: a vector another embedding model made
        (a replica not yet redeployed, or an entry from before a change of model) is dropped,
        since its cosines with this model's vectors would mean nothing."""
        model = self._embedder.name if self._embedder is not None else None
        if record.vector is None or record.model == model:
            return record
        return replace(record, vector=None, model=None)

    def _usable(self, entry: Entry, ticket: CacheTicket, now: float) -> bool:
        # Longer than the request may be: its budget was reserved for `max_tokens`.
        return (entry.created_at + self.options.ttl_s > now
                and entry.output_tokens <= ticket.max_tokens)

    async def _embed(self, text: str, budget_s: float) -> Sequence[float] | None:
        embedder = self._embedder
        if embedder is None or time.monotonic() < self._embedding_down_until:
            return None
        with anyio.move_on_after(budget_s) as scope:
            try:
                return await embedder.embed(text)
            except ProviderError as exc:
                error: Exception = exc
        if scope.cancelled_caught:
            error = TimeoutError()
        self._embedding_down_until = time.monotonic() + EMBEDDING_RETRY_S
        self._failed("embed", error)
        return None

    def remember(self, ticket: CacheTicket, answer: str, route: str,
                 output_tokens: int) -> None:
        """Queue the answer to be stored; dropped (and counted) when the queue is full."""
        if len(self._writes) >= WRITE_QUEUE:
            CACHE_WRITES.labels("dropped").inc()
            return
        self._writes.append(_Write(ticket, Entry(answer, self._clock(), output_tokens, route)))
        self._written.set()

    async def run(self) -> None:
        """The writer: stores queued answers, one at a time, until cancelled."""
        if self._embedder is not None:
            await self._embed(WARM_UP_TEXT, WRITE_EMBEDDING_S)
        while True:
            await self._written.wait()
            self._written = anyio.Event()
            while self._writes:
                await self._write(self._writes.popleft())

    async def _write(self, write: _Write) -> None:
        ticket, entry = write.ticket, write.entry
        question = ticket.question
        vector = ticket.vector
        if vector is None:
            vector = await self._embed(question.text, WRITE_EMBEDDING_S)
        record = IndexRecord(question.key, question.scope, entry.created_at,
                             signature(question.text), vector,
                             None if vector is None or self._embedder is None
                             else self._embedder.name)
        try:
            with anyio.fail_after(self.options.lookup_timeout_s * 4):
                await self._store.put(question.tenant, record, entry)
        except (StoreError, TimeoutError) as exc:
            CACHE_WRITES.labels("failed").inc()
            self._failed("store", exc)
            return
        self._index(question.tenant).add(record, self._clock())
        CACHE_WRITES.labels("stored").inc()

    async def clear(self, tenant: str) -> int:
        """Forget every entry of the tenant; raises `StoreError` when the store is down."""
        self._indexes.pop(tenant, None)
        try:
            cleared = await self._store.clear(tenant)
        except StoreError as exc:
            self._failed("clear", exc)
            raise
        logger.warning("cache_cleared", extra={"tenant_id": tenant, "entries": cleared})
        return cleared

    def _index(self, tenant: str) -> NearIndex:
        index = self._indexes.get(tenant)
        if index is None:
            index = self._indexes[tenant] = NearIndex(self.options.max_entries,
                                                      self.options.ttl_s)
        return index

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.labels(operation).inc()
        now = time.monotonic()
        if now - self._last_error_log.get(operation, -math.inf) >= ERROR_LOG_EVERY_S:
            self._last_error_log[operation] = now
            logger.warning("cache_unavailable", extra={
                "operation": operation, "error_class": type(exc).__name__})

    async def aclose(self) -> None:
        self._writes.clear()
        await self._store.aclose()
        if self._embedder is not None:
            await self._embedder.aclose()
