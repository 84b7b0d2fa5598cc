"""One tenant's near-duplicate index: which cached questions resemble a new one.

It holds no answers, only what matching needs (each entry's scope, age, MinHash signature
and, with an embedding model, its vector), so with Redis every replica keeps its own copy of
the index while the answers stay in Redis. Bounded: the oldest entries go first once
`max_entries` is reached, and expired ones as they are met.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cache.lexical import LexicalIndex

if TYPE_CHECKING:
    from cache.vectors import VectorIndex

# Candidates checked per lookup: the best may have been cleared or expired in Redis.
CANDIDATES = 3


@dataclass(frozen=True, slots=True)
class IndexRecord:
    key: str
    scope: str
    created_at: float
    signature: tuple[int, ...]
    vector: Sequence[float] | None = None  # None: no embedding model, or it failed
    model: str | None = None  # the embedding model that made `vector`


class NearIndex:
    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        # key -> (scope, created_at), oldest first: the signature and vector live in the
        # indexes alone.
        self._records: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lexical: dict[str, LexicalIndex] = {}  # by scope
        self._vectors: dict[str, VectorIndex] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: IndexRecord, now: float) -> None:
        if record.created_at + self._ttl_s <= now:
            return
        self.remove(record.key)
        lexical = self._lexical.setdefault(record.scope, LexicalIndex())
        try:
            lexical.add(record.key, record.signature)
        except ValueError:  # not a signature this version makes: never matched
            if not len(lexical):
                del self._lexical[record.scope]
            return
        self._records[record.key] = (record.scope, record.created_at)
        if record.vector is not None:
            vectors = self._vectors.get(record.scope)
            if vectors is None:
                from cache.vectors import VectorIndex  # numpy only with an embedding model

                vectors = self._vectors[record.scope] = VectorIndex()
            with suppress(ValueError):  # another model's length, or a zero vector: lexical only
                vectors.add(record.key, record.vector)
        self._expire(now)
        while len(self._records) > self._max_entries:
            self.remove(next(iter(self._records)))

    def remove(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        scope = record[0]
        lexical = self._lexical[scope]
        lexical.remove(key)
        if not len(lexical):
            del self._lexical[scope]
        vectors = self._vectors.get(scope)
        if vectors is not None:
            vectors.remove(key)
            if not len(vectors):
                del self._vectors[scope]

    def lexical(self, scope: str, signature: tuple[int, ...], threshold: float,
                now: float) -> list[tuple[str, float]]:
        index = self._lexical.get(scope)
        if index is None:
            return []
        return self._live(index.best(signature, threshold, CANDIDATES), now)

    def semantic(self, scope: str, vector: Sequence[float], threshold: float,
                 now: float) -> list[tuple[str, float]]:
        index = self._vectors.get(scope)
        if index is None:
            return []
        try:
            found = index.best(vector, threshold, CANDIDATES)
        except ValueError:  # the model changed its vector length: nothing comparable
            return []
        return self._live(found, now)

    def _live(self, found: list[tuple[str, float]], now: float) -> list[tuple[str, float]]:
        live = []
        for key, similarity in found:
            if self._records[key][1] + self._ttl_s <= now:
                self.remove(key)
            else:
                live.append((key, similarity))
        return live

    def _expire(self, now: float) -> None:
        while self._records:
            key, (_scope, created_at) = next(iter(self._records.items()))
            if created_at + self._ttl_s > now:
                return
            self.remove(key)
