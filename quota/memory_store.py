"""The embedded quota store: limits held in this process.

Every check-and-update runs without an await, so on the event loop it is atomic. Each process
(each `--workers` worker) has its own counts; set `REDIS_URL` to share them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from quota.ledger import (
    ADMITTED,
    RATE_WINDOW_S,
    Ask,
    DayUsage,
    Limits,
    Refusal,
    Spend,
    Verdict,
)


@dataclass(slots=True)
class _Window:
    """Admission times within the last minute: an exact sliding window."""

    times: deque[float]

    def wait(self, limit: int, now: float) -> float | None:
        """Seconds until a slot frees, or None when there is room."""
        while self.times and self.times[0] <= now - RATE_WINDOW_S:
            self.times.popleft()
        if len(self.times) < limit:
            return None
        return self.times[0] + RATE_WINDOW_S - now


class MemoryStore:
    def __init__(self, lease_s: float, retention_days: int) -> None:
        self._lease_s = lease_s
        self._retention_days = retention_days
        self._windows: dict[tuple[str, str | None], _Window] = {}
        self._streams: dict[str, dict[str, float]] = {}  # tenant -> ticket -> lease end
        self._holds: dict[str, Ask] = {}  # ticket -> the reservation it holds
        self._days: dict[tuple[str, str], DayUsage] = {}
        self._latest_day = ""

    def _window(self, tenant: str, user: str | None) -> _Window:
        window = self._windows.get((tenant, user))
        if window is None:
            window = self._windows[(tenant, user)] = _Window(deque())
        return window

    def _day(self, tenant: str, day: str) -> DayUsage:
        return self._days.get((tenant, day)) or DayUsage(day)

    async def admit(self, ask: Ask, limits: Limits, now: float) -> Verdict:
        if ask.ticket in self._holds:
            return ADMITTED  # the same request asked twice
        self._forget_old_days(ask.day)
        tenant_window = self._window(ask.tenant, None)
        wait = tenant_window.wait(limits.rpm, now)
        if wait is not None:
            return Verdict(Refusal.TENANT_RPM, wait)
        user_window = None
        if limits.user_rpm is not None and ask.user is not None:
            user_window = self._window(ask.tenant, ask.user)
            wait = user_window.wait(limits.user_rpm, now)
            if wait is not None:
                return Verdict(Refusal.USER_RPM, wait)
        leases = self._streams.setdefault(ask.tenant, {})
        for ticket in [t for t, expires in leases.items() if expires <= now]:
            # A lease outlives its request only if its settlement was lost.
            del leases[ticket]
            lapsed = self._holds.pop(ticket, None)
            if lapsed is not None and lapsed.day == ask.day:
                self._release(lapsed)
        if len(leases) >= limits.streams:
            return Verdict(Refusal.STREAMS, 1.0)
        day = self._day(ask.tenant, ask.day)
        refusal = _budget_refusal(day, ask, limits)
        if refusal is not None:
            return refusal
        tenant_window.times.append(now)
        if user_window is not None:
            user_window.times.append(now)
        leases[ask.ticket] = now + self._lease_s
        self._holds[ask.ticket] = ask
        self._days[(ask.tenant, ask.day)] = replace(
            day, reserved_tokens=day.reserved_tokens + ask.tokens,
            reserved_nano_usd=day.reserved_nano_usd + ask.nano_usd)
        return ADMITTED

    async def finish(self, ask: Ask, spent: Spend) -> None:
        """A reservation is settled once: here, or (released unbilled) by an admission that
        found its lease lapsed. Run again for the same ticket, or for one never admitted,
        this changes nothing."""
        self._streams.get(ask.tenant, {}).pop(ask.ticket, None)
        if self._holds.pop(ask.ticket, None) is None:
            return
        self._release(ask)
        day = self._day(ask.tenant, ask.day)
        self._days[(ask.tenant, ask.day)] = replace(
            day,
            requests=day.requests + 1,
            input_tokens=day.input_tokens + spent.input_tokens,
            output_tokens=day.output_tokens + spent.output_tokens,
            spent_nano_usd=day.spent_nano_usd + spent.nano_usd,
        )

    def _release(self, ask: Ask) -> None:
        day = self._day(ask.tenant, ask.day)
        self._days[(ask.tenant, ask.day)] = replace(
            day, reserved_tokens=max(0, day.reserved_tokens - ask.tokens),
            reserved_nano_usd=max(0, day.reserved_nano_usd - ask.nano_usd))

    async def usage(self, tenant: str, days: Sequence[str]) -> list[DayUsage]:
        return [self._day(tenant, day) for day in days]

    async def aclose(self) -> None:
        pass

    def _forget_old_days(self, today: str) -> None:
        if today <= self._latest_day:
            return
        self._latest_day = today
        kept = sorted({day for _, day in self._days})[-self._retention_days:]
        self._days = {key: usage for key, usage in self._days.items() if key[1] in kept}
        self._windows = {key: window for key, window in self._windows.items() if window.times}


def _budget_refusal(day: DayUsage, ask: Ask, limits: Limits) -> Verdict | None:
    checks = [(Refusal.TOKEN_BUDGET, day.spent_tokens, day.reserved_tokens, ask.tokens,
               limits.daily_tokens)]
    if limits.daily_nano_usd is not None:
        checks.append((Refusal.USD_BUDGET, day.spent_nano_usd, day.reserved_nano_usd,
                       ask.nano_usd, limits.daily_nano_usd))
    for refusal, spent, reserved, wanted, limit in checks:
        if spent + reserved + wanted > limit:
            return Verdict(refusal, held_by_reservations=spent + wanted <= limit)
    return None
