"""A circuit breaker per route: stop sending traffic to a route that keeps failing.

closed: requests flow; `failure_threshold` failed attempts in a row open it.
open: the route is skipped for `cooldown_s`, then one request is let through as a trial.
half_open: that trial is in flight; others skip the route. Its success closes the breaker,
its failure opens it for another cool-down. Only the request holding the trial can settle
or give it back, so a request admitted earlier cannot close (or wedge) the breaker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

from telemetry.metrics import BREAKER_LEVEL, BREAKER_STATE, BREAKER_TRANSITIONS

logger = logging.getLogger("hello_ship.breaker")

BreakerState = Literal["closed", "open", "half_open"]
Admission = Literal["normal", "trial"]


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
        self._gauge = BREAKER_STATE.labels(route)
        self._gauge.set(0)  # every route shows up, closed, before its first move

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._cooled_down():
            return "half_open"  # due for a trial, which the next `admit` hands out
        return self._state

    def reopens_in(self) -> float:
        """Seconds until the route can be tried again (0 when it can be now)."""
        if self._state == "open":
            return max(0.0, self._opened_at + self._cooldown_s - self._clock())
        return math.inf if self._state == "half_open" else 0.0

    def admissible(self) -> bool:
        """Whether `admit` would let a request through now, without claiming anything."""
        return self._state == "closed" or (self._state == "open" and self._cooled_down())

    def admit(self) -> Admission | None:
        """Whether a request may use the route now; "trial" when it is the probe."""
        if self._state == "closed":
            return "normal"
        if self._state == "open" and self._cooled_down():
            self._move("half_open")
            return "trial"
        return None

    def record_success(self, admission: Admission) -> None:
        if admission == "trial":
            self._failures = 0
            self._move("closed")
        elif self._state == "closed":
            self._failures = 0

    def record_failure(self, admission: Admission) -> None:
        if admission == "trial" or (self._state == "closed"
                                    and self._failures + 1 >= self._threshold):
            self._failures += 1
            self._opened_at = self._clock()
            self._move("open")
        elif self._state == "closed":
            self._failures += 1

    def release(self, admission: Admission) -> None:
        """A trial that ended neither way (the client left): the next request tries."""
        if admission == "trial" and self._state == "half_open":
            self._opened_at = self._clock() - self._cooldown_s
            self._move("open")

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._cooldown_s

    def _move(self, state: BreakerState) -> None:
        previous, self._state = self._state, state
        BREAKER_TRANSITIONS.labels(self.route, state).inc()
        self._gauge.set(BREAKER_LEVEL[state])
        logger.warning("breaker_state", extra={
            "model_route": self.route, "state": state, "previous": previous,
            "failures": self._failures, "cooldown_s": self._cooldown_s})
