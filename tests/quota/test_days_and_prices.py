"""The UTC days budgets run on, and what tokens cost."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from quota.days import day_fraction_elapsed, recent_days, seconds_to_next_day, utc_day
from quota.prices import FREE, Price


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("when", "day"), [
    ("2026-11-28T00:00:00", "20261128"),
    ("2026-11-28T23:59:59.999", "20261128"),
    ("2026-01-05T12:00:00", "20260105"),
])
def test_a_budget_day_is_the_utc_date(when: str, day: str) -> None:
    assert utc_day(at(when)) == day


def test_the_day_is_utcs_whatever_the_servers_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: already tomorrow there
    time.tzset()
    try:
        assert utc_day(at("2026-11-28T12:00:00")) == "20261128"
        assert recent_days(at("2026-11-28T12:00:00"), 2) == ["20261127", "20261128"]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_recent_days_end_today_oldest_first() -> None:
    now = at("2026-03-01T08:00:00")
    assert recent_days(now, 3) == ["20260227", "20260228", "20260301"]
    assert recent_days(now, 1) == ["20260301"]
    assert recent_days(now, 0) == []


@pytest.mark.parametrize(("when", "seconds", "fraction"), [
    ("2026-11-28T00:00:00", 86_400, 0.0),
    ("2026-11-28T06:00:00", 64_800, 0.25),
    ("2026-11-28T23:59:59", 1, 86_399 / 86_400),
    ("2026-11-28T23:59:59.5", 1, 86_399.5 / 86_400),  # never 0: a retry in 0 s is no retry
])
def test_how_much_of_the_day_is_gone_and_left(when: str, seconds: int, fraction: float) -> None:
    assert seconds_to_next_day(at(when)) == seconds
    assert day_fraction_elapsed(at(when)) == pytest.approx(fraction)


@pytest.mark.parametrize(("price", "input_tokens", "output_tokens", "nano_usd"), [
    (Price(2.5, 10.0), 1000, 500, 7_500_000),  # 2500 + 5000 USD-millionths
    (Price(0.15, 0.6), 3, 0, 450),
    (Price(0.1, 0.0), 3, 0, 300),  # 0.1 * 3 is 0.30000000000000004: float noise, no extra
    (Price(0.0003, 0.0), 1, 0, 1),  # a fraction of a nano-dollar is rounded up
    (Price(0.0, 0.0003), 0, 1, 1),
    # below a millionth of a nano-dollar it is taken for float noise, not rounded up
    (Price(0.0050000004, 0.0), 1, 0, 5),
    (FREE, 1000, 1000, 0),
])
def test_a_price_is_what_the_tokens_cost_rounded_up(price: Price, input_tokens: int,
                                                    output_tokens: int, nano_usd: int) -> None:
    assert price.nano_usd(input_tokens, output_tokens) == nano_usd


def test_the_most_expensive_price_is_the_highest_of_each_direction() -> None:
    prices = [Price(2.5, 10.0), Price(3.0, 4.0), Price(0.5, 12.0)]
    assert Price.most_expensive(prices) == Price(3.0, 12.0)
    assert Price.most_expensive([Price(1.5, 2.5)]) == Price(1.5, 2.5)
    assert Price.most_expensive([]) == Price(0.0, 0.0)
