"""What happened to one stream, filled in by the pipeline and read by the edge for its logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    fallback_tier: str | None = None  # primary, fallback, or static (the degraded copy)
    attempts: int = 0  # on the route that answered
    blocked_by: str | None = None  # the output guard's detector that stopped the answer

    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started_at) * 1000, 1)
