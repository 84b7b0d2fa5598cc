"""Caps and watches the traffic that goes to fallback routes, which often cost more."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("hello_ship.fallback")

WINDOW_S = 60.0


class RateCap:
    """At most `per_minute` uses in any 60 s; None means no cap."""

    def __init__(self, per_minute: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._used: deque[float] = deque()

    def has_room(self) -> bool:
        if self._limit is None:
            return True
        now = self._clock()
        while self._used and now - self._used[0] >= WINDOW_S:
            self._used.popleft()
        return len(self._used) < self._limit

    def take(self) -> bool:
        if not self.has_room():
            return False
        if self._limit is not None:
            self._used.append(self._clock())
        return True


class FallbackWatch:
    """Logs `fallback_traffic_high` (at most once a window) while more than `share` of the
    answers in the last minute came from a fallback tier or the static copy."""

    def __init__(self, share: float, min_requests: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._share = share
        self._min_requests = min_requests
        self._clock = clock
        self._answers: deque[tuple[float, bool]] = deque()
        self._fallbacks = 0
        self._last_alert = -WINDOW_S

    def record(self, tier: str) -> None:
        now = self._clock()
        degraded = tier != "primary"
        self._answers.append((now, degraded))
        self._fallbacks += degraded
        while now - self._answers[0][0] >= WINDOW_S:
            _, was_degraded = self._answers.popleft()
            self._fallbacks -= was_degraded
        total = len(self._answers)
        if (total >= self._min_requests and self._fallbacks / total > self._share
                and now - self._last_alert >= WINDOW_S):
            self._last_alert = now
            logger.warning("fallback_traffic_high", extra={
                "window_s": WINDOW_S, "requests": total, "fallback_requests": self._fallbacks,
                "share": round(self._fallbacks / total, 3)})
