"""Usage read-outs: a tenant's spending today, what is left of its budget, recent days, and
the monthly cost projection (avg tokens/request x requests/day x 30 x price/1M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quota.days import day_fraction_elapsed, seconds_to_next_day
from quota.ledger import NANO_USD_PER_USD, DayUsage, Limits

MONTH_DAYS = 30
HEADROOM = 3  # the seed guide's allowance for prompt growth and retries
MIN_DAY_FRACTION = 1 / 24  # extrapolating from less than an hour of today says little


def usage_report(tenant: str, limits: Limits, history: Sequence[DayUsage],
                 now: float) -> dict[str, Any]:
    """The read-out of `tenant`, held to `limits`, from its `history` (oldest day first)."""
    today = history[-1]
    daily_usd = None if limits.daily_nano_usd is None else _usd(limits.daily_nano_usd)
    return {
        "tenant": tenant,
        "day": today.day,
        "today": {
            **_day(today),
            "reserved_tokens": today.reserved_tokens,
            "reserved_usd": _usd(today.reserved_nano_usd),
        },
        "budget": {
            "daily_tokens": limits.daily_tokens,
            # what a new request can still reserve: answers in progress hold their share
            "tokens_left": max(0, limits.daily_tokens - today.spent_tokens
                               - today.reserved_tokens),
            "daily_usd": daily_usd,
            "usd_left": None if limits.daily_nano_usd is None else _usd(max(
                0, limits.daily_nano_usd - today.spent_nano_usd - today.reserved_nano_usd)),
            "renews_in_s": seconds_to_next_day(now),
        },
        "limits": {"rpm": limits.rpm, "user_rpm": limits.user_rpm,
                   "streams": limits.streams},
        "days": [_day(day) for day in history],
        "projection": projection(history, now),
    }


def projection(history: Sequence[DayUsage], now: float) -> dict[str, Any] | None:
    """The monthly cost at the recorded pace; None before anything was recorded.

    Whole past days with traffic are the basis when there are any; otherwise today, scaled
    up from the part of it that has passed.
    """
    first = next((i for i, day in enumerate(history[:-1]) if day.requests), None)
    if first is not None:  # quiet days after the first busy one count, as zero
        basis = list(history[first:-1])
        days_counted, note = float(len(basis)), f"{len(basis)} recorded day(s)"
    elif history[-1].requests:
        basis = [history[-1]]
        days_counted = max(day_fraction_elapsed(now), MIN_DAY_FRACTION)
        note = "today so far, extrapolated to a whole day"
    else:
        return None
    requests = sum(day.requests for day in basis)
    tokens = sum(day.spent_tokens for day in basis)
    nano_usd = sum(day.spent_nano_usd for day in basis)
    avg_tokens = tokens / requests
    per_day = requests / days_counted
    price_per_m = nano_usd / NANO_USD_PER_USD / tokens * 1_000_000 if tokens else 0.0
    monthly = avg_tokens * per_day * MONTH_DAYS * price_per_m / 1_000_000
    return {
        "basis": note,
        "avg_tokens_per_request": round(avg_tokens, 1),
        "requests_per_day": round(per_day, 1),
        "usd_per_1m_tokens": round(price_per_m, 6),
        "monthly_usd": round(monthly, 2),
        "monthly_usd_with_headroom": round(monthly * HEADROOM, 2),
        "formula": "avg tokens/request x requests/day x 30 x price/1M (headroom x3)",
    }


def _day(day: DayUsage) -> dict[str, Any]:
    return {"day": day.day, "requests": day.requests, "input_tokens": day.input_tokens,
            "output_tokens": day.output_tokens, "tokens": day.spent_tokens,
            "cost_usd": _usd(day.spent_nano_usd)}


def _usd(nano_usd: int) -> float:
    return round(nano_usd / NANO_USD_PER_USD, 9)
