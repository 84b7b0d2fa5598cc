"""Why tenancy turns a caller away. Each carries the facts of its case; the edge answers it
with its HTTP status, headers and envelope (app.errors), so tenancy knows nothing of HTTP.

    TenancyRefusal
     ├── Unauthenticated    no key, or one that is not valid
     ├── OpenModeRefused    no keys configured, and the caller is not on loopback
     ├── OverLimit          a rate, stream or daily budget limit; says when to retry
     ├── LimitsUnavailable  the limit store is down and the policy is to refuse
     └── StreamTokenRefused a stream URL's token is not ours, too old, or for another answer
"""

from __future__ import annotations

from typing import Literal

from quota.ledger import Ask, Limits, Refusal


class TenancyRefusal(Exception):
    """A caller refused before any provider call."""


class Unauthenticated(TenancyRefusal):
    def __init__(self, key_sent: bool) -> None:
        super().__init__("a key was sent, but is not valid" if key_sent else "no key was sent")
        self.key_sent = key_sent


class OpenModeRefused(TenancyRefusal):
    def __init__(self) -> None:
        super().__init__("open mode answers on loopback only")


class OverLimit(TenancyRefusal):
    """`limits` are the ones refused against; `ask` is what the request asked for."""

    def __init__(self, refusal: Refusal, retry_after_s: int, limits: Limits, ask: Ask, *,
                 held_by_reservations: bool = False) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.retry_after_s = retry_after_s
        self.limits = limits
        self.ask = ask
        self.held_by_reservations = held_by_reservations


class LimitsUnavailable(TenancyRefusal):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the limit store is unavailable")
        self.retry_after_s = retry_after_s


class StreamTokenRefused(TenancyRefusal):
    def __init__(self, reason: Literal["invalid", "expired", "forbidden"]) -> None:
        super().__init__(f"the stream token is {reason}")
        self.reason = reason
