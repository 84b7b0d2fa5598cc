"""Per-route readiness: each route's cheap check, run in the background and cached.

`/ready` is polled every few seconds by load balancers and Kubernetes, often with a one
second timeout, so it never waits on a vendor: it reads the last result of each route's
`probe()` (credentials present, vendor reachable), refreshed every `READY_CHECK_S`. Start-up
waits (at most `FIRST_ROUND_WAIT_S`) for the first round, so a fresh process does not report
"not checked yet" to its first probes in the normal case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import anyio

from providers.types import RouteHealth
from streaming.chain import ChainLink

logger = logging.getLogger("hello_ship.readiness")

PROBE_TIMEOUT_S = 6.0  # adapters bound their own calls at 5 s; this catches anything else
FIRST_ROUND_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class RouteStatus:
    health: RouteHealth
    checked_at: float  # time.monotonic()

    def payload(self, route: str, breaker: str, now: float) -> dict[str, object]:
        return {
            "route": route,
            "usable": self.health.usable,
            "breaker": breaker,
            "credentials": self.health.credentials,
            "reachable": self.health.reachable,
            "checked_s_ago": round(now - self.checked_at, 1),
            **({"problem": self.health.problem} if self.health.problem else {}),
        }


class RouteChecks:
    def __init__(self, links: Sequence[ChainLink], interval_s: float) -> None:
        self._links = tuple(links)
        self._interval_s = interval_s
        self._results: dict[int, RouteStatus] = {}  # by position in the chain
        self._first_round = anyio.Event()

    async def run(self) -> None:
        """Check every route now and then every `interval_s`, until cancelled."""
        while True:
            async with anyio.create_task_group() as group:
                for index in range(len(self._links)):
                    group.start_soon(self._check, index)
            self._first_round.set()
            await anyio.sleep(self._interval_s)

    async def check_routes(self, routes: Collection[str]) -> None:
        """Check these routes now, not at the next round: their keys have just changed."""
        async with anyio.create_task_group() as group:
            for index, link in enumerate(self._links):
                if link.provider.route in routes:
                    group.start_soon(self._check, index)

    async def _check(self, index: int) -> None:
        """One route's check; nothing it raises may end the loop (or reach uvicorn's log)."""
        provider = self._links[index].provider
        try:
            with anyio.fail_after(PROBE_TIMEOUT_S):
                health = await provider.probe()
        except TimeoutError:
            health = RouteHealth("unknown", False, "check timed out")
        except Exception:
            logger.exception("route_check_failed", extra={"route_index": index})
            health = RouteHealth("unknown", False, "check failed")
        previous = self._results.get(index)
        self._results[index] = RouteStatus(health, time.monotonic())
        if previous is None or previous.health.usable != health.usable:
            self._log_change(index, health)

    def _log_change(self, index: int, health: RouteHealth) -> None:
        try:
            route = self._links[index].provider.route
        except Exception:
            route = f"route #{index}"
        logger.info("route_checked", extra={
            "model_route": route, "usable": health.usable, "credentials": health.credentials,
            "reachable": health.reachable, "problem": health.problem})

    async def first_round(self, timeout_s: float) -> None:
        """Wait (bounded) for the first results, so the listener opens knowing them."""
        with anyio.move_on_after(timeout_s):
            await self._first_round.wait()

    def report(self) -> tuple[bool, list[str], list[dict[str, object]]]:
        """Whether any route is usable, the reasons for each that is not, and every route."""
        now = time.monotonic()
        reasons: list[str] = []
        routes: list[dict[str, object]] = []
        for index, link in enumerate(self._links):
            route, breaker = link.provider.route, link.breaker.state
            if link.disabled:
                reasons.append(f"{route}: disabled by DISABLED_ROUTES")
                routes.append({"route": route, "usable": False, "breaker": breaker,
                               "disabled": True})
                continue
            status = self._results.get(index)
            if status is None:
                reasons.append(f"{route}: not checked yet")
                routes.append({"route": route, "usable": False, "breaker": breaker})
                continue
            routes.append(status.payload(route, breaker, now))
            # An open breaker is shown, not counted: it opens on every replica at once, and
            # taking them all out of the balancer would trade the degraded copy for its errors.
            if not status.health.usable:
                reasons.append(f"{route}: {status.health.problem or 'unusable'}")
        usable = any(route["usable"] for route in routes)
        return usable, reasons, routes
