"""One cached answer, and a lookup's hit: the entry, how it matched and how closely."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

MatchKind = Literal["exact", "semantic", "lexical"]
# off: never; fallback: when every route failed, before the static copy; first: before any
# route is asked (FAQ mode).
CacheMode = Literal["off", "fallback", "first"]
CACHE_MODES: tuple[CacheMode, ...] = ("off", "fallback", "first")
# The route name a cached answer is served under: in `done`, logs, metrics and bills.
CACHE_ROUTE = "cache"


@dataclass(frozen=True, slots=True)
class Entry:
    answer: str  # as the output guard released it, which changed nothing
    created_at: float  # wall-clock seconds: replicas compare ages
    output_tokens: int
    route: str  # the model that wrote it

    def encode(self) -> bytes:
        return orjson.dumps({"a": self.answer, "t": self.created_at, "o": self.output_tokens,
                             "r": self.route})

    @classmethod
    def decode(cls, raw: bytes | str) -> Entry:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(str(data["a"]), float(data["t"]), int(data["o"]), str(data["r"]))


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: Entry
    kind: MatchKind
    similarity: float  # 1.0 for an exact hit
    age_s: float  # how old the answer was when it was served
