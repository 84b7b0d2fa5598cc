"""Budgets run per UTC day."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

DAY_S = 86_400


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def recent_days(now: float, count: int) -> list[str]:
    """`count` UTC days ending today, oldest first."""
    today = datetime.fromtimestamp(now, UTC)
    return [(today - timedelta(days=back)).strftime("%Y%m%d") for back in range(count - 1, -1, -1)]


def seconds_to_next_day(now: float) -> int:
    return max(1, math.ceil(DAY_S - now % DAY_S))


def day_fraction_elapsed(now: float) -> float:
    return (now % DAY_S) / DAY_S
