"""A circuit breaker per route: stop sending traffic to a route that keeps failing.

closed: requests flow; `failure_threshold` failures in a row open it.
open: the route is skipped for `cooldown_s`, then the next request is let through as a trial.
half_open: that one trial is in flight; others skip the route. Success closes the breaker,
failure opens it for another cool-down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

logger = logging.getLogger("hello_ship.breaker")

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, route: str, failure_threshold: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.route = route
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown_s:
            return "half_open"  # due for a trial, which the next `allow` hands out
        return self._state

    def allow(self) -> bool:
        """Whether a request may use the route now (claims the trial when one is due)."""
        if self._state == "closed":
            return True
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown_s:
            self._move("half_open")
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        if self._state != "closed":
            self._move("closed")

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self._threshold):
            self._opened_at = self._clock()
            self._move("open")

    def release(self) -> None:
        """A trial that ended neither way (the client left): let the next request try."""
        if self._state == "half_open":
            self._opened_at = self._clock() - self._cooldown_s
            self._state = "open"

    def _move(self, state: BreakerState) -> None:
        previous, self._state = self._state, state
        logger.warning("breaker_state", extra={
            "model_route": self.route, "state": state, "previous": previous,
            "failures": self._failures, "cooldown_s": self._cooldown_s})
