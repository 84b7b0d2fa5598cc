"""What happened to one stream, filled in by the pipeline and read by the edge for its logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cache.entry import CacheHit
from providers.types import Usage

Outcome = Literal[
    "pending", "ok", "error", "client_disconnected", "client_stalled", "cancelled",
]


@dataclass(slots=True)
class StreamRecord:
    started_at: float
    outcome: Outcome = "pending"
    model_route: str | None = None
    first_token_at: float | None = None
    tokens_emitted: int = 0  # token frames sent; the output guard may join deltas into one
    deltas_received: int = 0  # text deltas the model produced: what the vendor bills
    usage: Usage | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    incident_id: str | None = None
    # primary, fallback, cache (a cached answer), or static (the degraded copy)
    fallback_tier: str | None = None
    attempts: int = 0  # on the route that answered
    blocked_by: str | None = None  # the output guard's detector that stopped the answer
    cache_hit: CacheHit | None = None  # the answer was served from the cache
    # The text released to the client, kept only when the answer may be cached.
    released: list[str] | None = None

    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started_at) * 1000, 1)
