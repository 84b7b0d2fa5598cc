"""What a quota store is asked and answers: one admission check, one settlement, a read-out.

Money is counted in integer nano-dollars (1e-9 USD) so sums stay exact in Python and in Redis,
whose counters are integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

RATE_WINDOW_S = 60.0
NANO_USD_PER_USD = 1_000_000_000


class StoreUnavailable(Exception):
    """The store could not answer (Redis down, timed out); the caller applies its policy."""


class Refusal(Enum):
    TENANT_RPM = "tenant_rpm"
    USER_RPM = "user_rpm"
    STREAMS = "streams"
    TOKEN_BUDGET = "token_budget"
    USD_BUDGET = "usd_budget"


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int
    user_rpm: int | None  # None: a user is held only by the tenant's limit
    streams: int
    daily_tokens: int
    daily_nano_usd: int | None  # None: no money budget


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's claim: a rate-limit slot, a stream slot and its worst-case cost."""

    tenant: str
    user: str | None
    ticket: str  # unique per request
    day: str  # the UTC day (YYYYMMDD) whose budget it is charged to
    tokens: int
    nano_usd: int


@dataclass(frozen=True, slots=True)
class Spend:
    input_tokens: int
    output_tokens: int
    nano_usd: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


NOTHING_SPENT = Spend(0, 0, 0)


@dataclass(frozen=True, slots=True)
class Verdict:
    refusal: Refusal | None = None
    retry_after_s: float = 0.0
    # A budget refusal caused by other requests' reservations, not by what was spent:
    # it clears when they settle, not at midnight.
    held_by_reservations: bool = False

    @property
    def admitted(self) -> bool:
        return self.refusal is None


ADMITTED = Verdict()


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    spent_nano_usd: int = 0
    reserved_tokens: int = 0
    reserved_nano_usd: int = 0

    @property
    def spent_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class QuotaStore(Protocol):
    async def admit(self, ask: Ask, limits: Limits, now: float) -> Verdict:
        """All of a request's limits checked and taken together, or none of them."""
        ...

    async def finish(self, ask: Ask, spent: Spend) -> None:
        """Free the stream slot and turn the reservation into what was really spent."""
        ...

    async def usage(self, tenant: str, days: Sequence[str]) -> list[DayUsage]: ...

    async def aclose(self) -> None: ...
