"""Admission and settlement: the limits and budget every chat request passes before any
provider call, and the bill it settles when it ends.

Before the call the request reserves its worst case against the tenant's daily budget (an
upper bound of its input tokens plus its clamped `max_tokens`, at the highest price in the
chain), together with its rate-limit and stream slots, in one atomic step; concurrent requests
therefore cannot overshoot a budget. When it ends, the reservation is replaced by what the
provider reported (or, for a cut-off answer with no report, an estimate of what it used).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import anyio

from providers.tokens import count_tokens
from providers.types import Message
from quota.days import seconds_to_next_day, utc_day
from quota.ledger import (
    NANO_USD_PER_USD,
    NOTHING_SPENT,
    Ask,
    Limits,
    QuotaStore,
    Refusal,
    Spend,
    StoreUnavailable,
    Verdict,
)
from quota.prices import Price
from streaming.record import StreamRecord
from telemetry.metrics import QUOTA_REFUSALS, QUOTA_STORE_ERRORS
from tenancy.errors import LimitsUnavailable, OverLimit
from tenancy.identity import Identity, Tenancy

logger = logging.getLogger("hello_ship.limits")

# What admission does while the limit store cannot be reached: let requests through unmetered,
# or refuse them.
StorePolicy = Literal["open", "closed"]

# Per message, for the role and framing tokens vendors add around its text.
MESSAGE_OVERHEAD_TOKENS = 16
STORE_RETRY_AFTER_S = 5
HELD_BUDGET_RETRY_AFTER_S = 5
STORE_ERROR_LOG_EVERY_S = 10.0
# Failures before any text that vendors do not bill: the request was refused or never served.
NOT_BILLED_ERRORS = frozenset({"provider_unavailable", "provider_error"})
SETTLE_TIMEOUT_S = 5.0


def input_token_bound(messages: Sequence[Message]) -> int:
    """An upper bound of the input tokens: byte-level tokenizers never make more tokens than
    UTF-8 bytes."""
    return sum(len(m.content.encode("utf-8", "surrogatepass")) + MESSAGE_OVERHEAD_TOKENS
               for m in messages)


@dataclass(slots=True)
class Pass:
    """An admitted request; `ask` is None when it was let through unmetered (store down,
    policy open)."""

    ask: Ask | None
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Bill:
    spend: Spend
    cost_usd: float | None  # None: the route has no price
    estimated: bool  # no usage report: counted from what was relayed


class Gatekeeper:
    def __init__(self, tenancy: Tenancy, prices: Mapping[str, Price], route_names: Sequence[str],
                 store: QuotaStore, on_store_error: StorePolicy, retention_days: int,
                 clock: Callable[[], float] = time.time, cache_hit_usd: float = 0.0) -> None:
        self.store = store
        self._cache_hit_nano_usd = round(cache_hit_usd * NANO_USD_PER_USD)
        self.retention_days = retention_days
        self._route_names = tuple(route_names)
        self.reconfigure(tenancy, prices)
        self._on_store_error = on_store_error
        self._clock = clock
        self._last_store_error_log = -math.inf
        self._last_release_log = -math.inf

    def reconfigure(self, tenancy: Tenancy, prices: Mapping[str, Price]) -> None:
        """Keys, tenants and prices from a reloaded configuration: requests are admitted by
        them from now on, and every bill from now on is at the new prices."""
        self.tenancy = tenancy
        self._prices = prices
        self._worst_price = Price.most_expensive(
            [prices[name] for name in self._route_names if name in prices])

    def now(self) -> float:
        return self._clock()

    async def admit(self, identity: Identity, messages: Sequence[Message],
                    max_tokens: int) -> Pass:
        """Take the request's rate-limit slot, stream slot and worst-case budget, or refuse
        it: `OverLimit`, or `LimitsUnavailable` when the store is down and the policy is
        closed. An admission whose answer is lost gives back at once what the store may have
        taken for it."""
        limits = self.tenancy.policy(identity.tenant).limits
        now = self._clock()
        input_tokens = input_token_bound(messages)
        ask = Ask(identity.tenant, identity.user, secrets.token_hex(8), utc_day(now),
                  tokens=input_tokens + max_tokens,
                  nano_usd=self._worst_price.nano_usd(input_tokens, max_tokens))
        try:
            verdict = await self.store.admit(ask, limits, now)
        except StoreUnavailable as exc:
            self._store_failed("admit", exc)
            await self._release_lost_admission(ask, str(exc) or type(exc).__name__)
            if self._on_store_error == "open":
                return Pass(None)
            raise LimitsUnavailable(STORE_RETRY_AFTER_S) from None
        except anyio.get_cancelled_exc_class():
            # Cancelled while the store may already have taken the request's slots.
            await self._release_lost_admission(ask, "cancelled")
            raise
        if verdict.refusal is None:
            return Pass(ask)
        QUOTA_REFUSALS.labels(verdict.refusal.value).inc()
        raise _refusal(verdict, limits, ask, now)

    def bill(self, record: StreamRecord, messages: Sequence[Message]) -> Bill:
        """What the request cost: the vendor's usage report for a finished answer; for one
        that broke off, what the vendor reported so far and at least what it streamed; for a
        cached answer, no tokens and the configured price of a hit (CACHE_HIT_PRICE_USD)."""
        if record.cache_hit is not None:
            nano_usd = self._cache_hit_nano_usd
            return Bill(Spend(0, 0, nano_usd), nano_usd / NANO_USD_PER_USD, False)
        usage = record.usage
        if record.outcome == "ok" and usage is not None:
            input_tokens, output_tokens, estimated = usage.input_tokens, usage.output_tokens, False
        elif (usage is None and not record.deltas_received
              and record.error_code in NOT_BILLED_ERRORS):
            return Bill(NOTHING_SPENT, 0.0, False)
        else:
            # Cut off (client gone, timeout, shutdown) or broken mid-answer: the vendor has
            # read the prompt and billed what it generated, so charge the prompt in any case.
            input_tokens = (usage.input_tokens if usage is not None and usage.input_tokens
                            else sum(count_tokens(m.content) for m in messages))
            output_tokens = max(usage.output_tokens if usage else 0, record.deltas_received)
            estimated = True
        price = self._prices.get(record.model_route or "")
        nano_usd = price.nano_usd(input_tokens, output_tokens) if price else 0
        return Bill(Spend(input_tokens, output_tokens, nano_usd),
                    nano_usd / NANO_USD_PER_USD if price else None, estimated)

    async def settle(self, admitted: Pass, spend: Spend) -> None:
        """Release the request's slot and reservation, charging `spend`; runs once, even while
        the request is being cancelled."""
        if admitted.ask is None or admitted.settled:
            return
        admitted.settled = True
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(SETTLE_TIMEOUT_S):
                await self.store.finish(admitted.ask, spend)
        except (StoreUnavailable, TimeoutError) as exc:
            # The slot and the reservation are given back when the request's lease lapses;
            # what it spent goes unrecorded.
            self._store_failed("settle", exc)

    async def _release_lost_admission(self, ask: Ask, error: str) -> None:
        """The admission's answer was lost (a timeout, a broken connection, a cancellation),
        but the store may have taken its stream slot and reservation all the same: settle the
        ticket as nothing spent, so they come back now rather than when its lease lapses.
        Settling a ticket the store never admitted changes nothing. Best effort: if this
        fails too, the lease gives them back."""
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(SETTLE_TIMEOUT_S):
                await self.store.finish(ask, NOTHING_SPENT)
        except (StoreUnavailable, TimeoutError) as exc:
            self._store_failed("release", exc)
            return
        QUOTA_STORE_ERRORS.labels("admit_released", self._on_store_error).inc()
        now = time.monotonic()
        if now - self._last_release_log >= STORE_ERROR_LOG_EVERY_S:
            self._last_release_log = now
            logger.warning("limits_admission_released", extra={
                "error": error, "policy": self._on_store_error})

    def _store_failed(self, operation: str, exc: Exception) -> None:
        QUOTA_STORE_ERRORS.labels(operation, self._on_store_error).inc()
        now = time.monotonic()
        if now - self._last_store_error_log >= STORE_ERROR_LOG_EVERY_S:
            self._last_store_error_log = now
            logger.error("limits_store_unavailable", extra={
                "operation": operation, "error": str(exc) or type(exc).__name__,
                "policy": self._on_store_error})


def _refusal(verdict: Verdict, limits: Limits, ask: Ask, now: float) -> OverLimit:
    refusal = verdict.refusal
    assert refusal is not None, "only refusals are turned into errors"
    if refusal in (Refusal.TENANT_RPM, Refusal.USER_RPM):
        retry_after_s = max(1, math.ceil(verdict.retry_after_s))
    elif refusal is Refusal.STREAMS:
        retry_after_s = 1
    elif verdict.held_by_reservations:
        retry_after_s = HELD_BUDGET_RETRY_AFTER_S
    else:
        retry_after_s = seconds_to_next_day(now)
    return OverLimit(refusal, retry_after_s, limits, ask,
                     held_by_reservations=verdict.held_by_reservations)
