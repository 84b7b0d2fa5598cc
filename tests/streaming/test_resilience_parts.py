"""The pure parts of graceful degradation: backoff, the breaker, the fallback budget."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from prometheus_client import REGISTRY

from streaming.backoff import retry_delay
from streaming.breaker import CircuitBreaker
from streaming.fallback_budget import FallbackWatch, RateCap
from tests.logcapture import captured_logs
from tests.telemetry.test_log_schema import assert_documented


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (9, 8.0)):
        delays = [retry_delay(attempt, base_s=0.5, cap_s=8.0, retry_after=None,
                              remaining_s=100, rng=rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling * 0.8  # jitter spans it


def test_retry_after_is_honoured_only_when_it_fits_the_deadline() -> None:
    assert retry_delay(1, base_s=0.5, cap_s=8, retry_after=3.0, remaining_s=10) == 3.0
    assert retry_delay(1, base_s=0.5, cap_s=8, retry_after=30.0, remaining_s=10) is None
    assert retry_delay(3, base_s=5, cap_s=60, retry_after=None, remaining_s=0.001,
                       rng=random.Random(1)) is None


def test_the_breaker_opens_skips_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("openai/gpt-4o-mini", failure_threshold=3, cooldown_s=30,
                             clock=clock)
    with captured_logs() as logs:
        for _ in range(2):
            assert breaker.admit() == "normal"
            breaker.record_failure("normal")
        assert breaker.state == "closed"
        breaker.record_failure("normal")
        assert breaker.state == "open" and breaker.admit() is None
        assert breaker.reopens_in() == 30
        clock.now += 29.9
        assert breaker.admit() is None
        clock.now += 0.2
        assert breaker.state == "half_open"
        assert breaker.admit() == "trial"  # the one trial
        assert breaker.admit() is None  # nobody else while it runs
        breaker.record_success("trial")
        assert breaker.state == "closed" and breaker.admit() == "normal"
    assert [(r["state"], r["previous"]) for r in logs.records("breaker_state")] == [
        ("open", "closed"), ("half_open", "open"), ("closed", "half_open")]
    assert logs.records("breaker_state")[0]["model_route"] == "openai/gpt-4o-mini"


def test_a_failed_trial_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("r", failure_threshold=1, cooldown_s=10, clock=clock)
    breaker.record_failure("normal")
    clock.now += 10
    assert breaker.admit() == "trial"
    breaker.record_failure("trial")
    assert breaker.state == "open"
    clock.now += 9
    assert breaker.admit() is None


def test_a_trial_abandoned_by_its_client_lets_the_next_request_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker("r", failure_threshold=1, cooldown_s=10, clock=clock)
    breaker.record_failure("normal")
    clock.now += 10
    assert breaker.admit() == "trial"
    breaker.release("trial")
    assert breaker.admit() == "trial"


def test_only_the_trial_settles_a_half_open_breaker() -> None:
    """A request admitted before the breaker opened cannot close it, reopen it or hand out
    a second trial when it ends."""
    clock = Clock()
    breaker = CircuitBreaker("r", failure_threshold=1, cooldown_s=10, clock=clock)
    early = breaker.admit()
    assert early == "normal"
    breaker.record_failure("normal")  # another request's failure opens it
    clock.now += 10
    assert breaker.admit() == "trial"
    breaker.release("normal")
    breaker.record_success("normal")
    breaker.record_failure("normal")
    assert breaker.state == "half_open" and breaker.admit() is None


def test_success_resets_the_count_of_failures_in_a_row() -> None:
    breaker = CircuitBreaker("r", failure_threshold=2, cooldown_s=10, clock=Clock())
    breaker.record_failure("normal")
    breaker.record_success("normal")
    breaker.record_failure("normal")
    assert breaker.state == "closed"


def test_the_rate_cap_allows_so_many_a_minute() -> None:
    clock = Clock()
    cap = RateCap(2, clock=clock)
    assert cap.take() and cap.take() and not cap.take()
    clock.now += 60
    assert cap.take()
    assert all(RateCap(None, clock=clock).take() for _ in range(1000))


@pytest.mark.parametrize(("fallback_share", "alerts"), [(0.3, 0), (0.7, 1)])
def test_high_fallback_traffic_is_logged_once_a_window(fallback_share: float,
                                                       alerts: int) -> None:
    clock = Clock()
    watch = FallbackWatch(share=0.5, min_requests=10, clock=clock)
    with captured_logs() as logs:
        for index in range(40):
            clock.now += 0.5
            watch.record("fallback" if (index % 10) < fallback_share * 10 else "primary")
    records = logs.records("fallback_traffic_high")
    assert len(records) == alerts
    if alerts:
        assert records[0]["share"] > 0.5 and records[0]["window_s"] == 60


class TopOfRange(random.Random):
    """Jitter that always draws the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_wait_that_would_end_at_the_deadline_is_no_wait() -> None:
    assert retry_delay(1, base_s=0.5, cap_s=8, retry_after=10.0, remaining_s=10.0) is None
    assert retry_delay(1, base_s=0.5, cap_s=8, retry_after=9.5, remaining_s=10.0) == 9.5
    top = TopOfRange()
    assert retry_delay(2, base_s=0.5, cap_s=8, retry_after=None, remaining_s=1.0,
                       rng=top) is None
    assert retry_delay(2, base_s=0.5, cap_s=8, retry_after=None, remaining_s=1.01,
                       rng=top) == 1.0


COMMON_FIELDS = {"ts", "level", "logger", "event", "pid", "log_schema", "request_id", "trace_id"}


def own_fields(line: dict[str, Any]) -> dict[str, Any]:
    """A log line without the fields every line has."""
    return {key: value for key, value in line.items() if key not in COMMON_FIELDS}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_reopens_in_says_when_the_route_may_be_tried_again() -> None:
    """What the client's Retry-After is made of when every route's breaker is open."""
    clock = Clock()
    breaker = CircuitBreaker("r", failure_threshold=1, cooldown_s=30, clock=clock)
    assert breaker.reopens_in() == 0.0 and breaker.admissible()  # closed
    breaker.record_failure("normal")
    assert breaker.reopens_in() == 30 and not breaker.admissible()
    clock.now += 29.5
    assert breaker.reopens_in() == 0.5
    clock.now += 1
    assert breaker.reopens_in() == 0.0  # past its cool-down: the next request is the trial
    assert breaker.state == "half_open" and breaker.admissible()
    assert breaker.admit() == "trial"
    assert breaker.reopens_in() == math.inf and not breaker.admissible()  # trial in flight
    breaker.record_success("trial")
    assert breaker.reopens_in() == 0.0 and breaker.admissible()


def test_a_successful_trial_starts_the_count_of_failures_afresh() -> None:
    clock = Clock()
    breaker = CircuitBreaker("r", failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(3):
        breaker.record_failure("normal")
    clock.now += 10
    assert breaker.admit() == "trial"
    breaker.record_success("trial")
    breaker.record_failure("normal")
    breaker.record_failure("normal")
    assert breaker.state == "closed"  # two in a row, not five
    breaker.record_failure("normal")
    assert breaker.state == "open"


def test_the_breaker_shows_its_state_in_metrics_and_logs() -> None:
    clock = Clock()
    route = "metrics/breaker-route"
    states = ("open", "half_open", "closed")

    def transitions() -> dict[str, float]:
        return {state: sample("hello_ship_breaker_transitions_total", route=route,
                              state=state) or 0.0 for state in states}

    before = transitions()
    with captured_logs() as logs:
        breaker = CircuitBreaker(route, failure_threshold=2, cooldown_s=10, clock=clock)
        assert sample("hello_ship_breaker_state", route=route) == 0  # shown before any move
        breaker.record_failure("normal")
        breaker.record_failure("normal")
        assert sample("hello_ship_breaker_state", route=route) == 2
        clock.now += 10
        assert breaker.admit() == "trial"
        assert sample("hello_ship_breaker_state", route=route) == 1
        breaker.record_failure("trial")
        clock.now += 10
        assert breaker.admit() == "trial"
        breaker.record_success("trial")
        assert sample("hello_ship_breaker_state", route=route) == 0
    after = transitions()
    assert {state: after[state] - before[state] for state in states} == {
        "open": 2, "half_open": 2, "closed": 1}
    lines = logs.records("breaker_state")
    for line in lines:
        assert_documented(line)
    assert [(line["state"], line["failures"], line["cooldown_s"]) for line in lines] == [
        ("open", 2, 10), ("half_open", 2, 10), ("open", 3, 10), ("half_open", 3, 10),
        ("closed", 0, 10)]
    assert {line["model_route"] for line in lines} == {route}


def test_a_minute_of_answers_slides_and_alerts_once_a_minute() -> None:
    """The share is of the last minute's answers: older ones leave the window as it slides."""
    clock = Clock()
    clock.now = 0.0
    watch = FallbackWatch(share=0.5, clock=clock)  # 10 answers at least, by default
    with captured_logs() as logs:
        for _ in range(9):
            watch.record("fallback")
        assert logs.records("fallback_traffic_high") == []  # 9 answers: too few to judge
        watch.record("static")  # the degraded copy counts as a fallback: alert
        clock.now = 59.0
        for tier in ["primary"] * 5 + ["fallback"] * 5:
            watch.record(tier)  # 15 of 20 degraded, but one alert a minute at most
        clock.now = 60.0  # the first ten answers are a minute old: they leave the window
        watch.record("primary")  # 5 of 11
        watch.record("fallback")  # 6 of 12: half is not more than half
        watch.record("fallback")  # 7 of 13, a minute after the first alert: alert
    lines = logs.records("fallback_traffic_high")
    assert {line["level"] for line in lines} == {"warning"}
    assert [own_fields(line) for line in lines] == [
        {"window_s": 60.0, "requests": 10, "fallback_requests": 10, "share": 1.0},
        {"window_s": 60.0, "requests": 13, "fallback_requests": 7, "share": 0.538},
    ]
