"""The route chain: retries with backoff, fallback to the next route, a breaker per route.

Everything here happens before the first event of an answer. A failure then (an error, or no
first token within `ttft_timeout_s`) is retried on the same route while retrying can help
and fits the request deadline, then the next route is tried, invisibly to the client. Once a
route has produced its first event the chain says so (`RouteAnswering`) and relays that
route to the end: an answer is never spliced from two models, so a failure after that point
reaches the pipeline as it is.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import anyio

from providers.base import Provider
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
)
from providers.headroom import Headroom
from providers.types import ChainEvent, CompletionRequest, RouteAnswering
from streaming.backoff import retry_delay
from streaming.breaker import CircuitBreaker
from streaming.fallback_budget import RateCap
from streaming.upstream import close_upstream
from telemetry.metrics import RETRIES

logger = logging.getLogger("hello_ship.chain")

Tier = Literal["primary", "fallback"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # per route
    base_s: float = 0.5
    cap_s: float = 8.0
    ttft_timeout_s: float = 30.0
    request_timeout_s: float = 120.0
    # A route whose vendor reports this share of a rate limit used, in a window not yet reset,
    # goes after the later routes with more room (HEADROOM_FALLBACK_AT); None: never.
    headroom_fallback_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChainLink:
    provider: Provider
    breaker: CircuitBreaker
    cap: RateCap  # how much traffic this route may take as a fallback
    tier: Tier
    disabled: bool = False  # taken out by the operator (a drill, a vendor incident)
    headroom: Headroom | None = None  # the vendor's quota, for adapters that read it


class FirstTokenTimeout(ProviderUnavailable):
    """The route did not start its answer within `ttft_timeout_s`."""


class AllRoutesFailed(ProviderUnavailable):
    """No route could start an answer: the client gets the degraded copy."""

    def __init__(self, message: str, *, retry_after: float | None, attempts: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.attempts = attempts


class RouteChain:
    """Routes in order, read by the pipeline like one provider; `route` names the primary."""

    def __init__(self, links: Sequence[ChainLink], policy: RetryPolicy,
                 rng: random.Random | None = None) -> None:
        if not links:
            raise ValueError("a chain needs at least one route")
        self.links = tuple(links)
        self._policy = policy
        self._rng = rng or random.Random()

    @property
    def route(self) -> str:
        return self.links[0].provider.route

    def pinned(self, route: str) -> RouteChain | None:
        """A chain of that one route alone, so an operator can evaluate every route of the
        chain; None if there is no such route. The route keeps its breaker, retries, tier
        and rate cap, and a disabled route stays disabled: no fallback."""
        for link in self.links:
            if link.provider.route == route:
                return RouteChain([link], self._policy, self._rng)
        return None

    def narrowed(self, routes: Sequence[str]) -> RouteChain:
        """A chain of these of its routes, in the given order: the client chose the first
        (`model`), so it answers as the primary; the rest stay fallbacks, capped as before.
        Routes keep their breakers, so every chain sees one route's health."""
        if tuple(routes) == tuple(link.provider.route for link in self.links):
            return self
        by_name = {link.provider.route: link for link in self.links}
        links = [by_name[name] for name in routes]
        links[0] = replace(links[0], tier="primary")
        return RouteChain(links, self._policy, self._rng)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ChainEvent, None]:
        policy = self._policy
        deadline = request.deadline_at or time.monotonic() + policy.request_timeout_s
        errors: list[ProviderError] = []
        reopening: list[float] = []  # when the routes skipped for open breakers reopen
        for position, link in self._candidates(reopening):
            for attempt in range(1, policy.max_attempts + 1):
                admission = link.breaker.admit()
                if admission is None:  # opened by this request's failures, or by others'
                    reopening.append(link.breaker.reopens_in())
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    link.breaker.release(admission)
                    raise _exhausted(errors, reopening)
                asked_at = time.monotonic()
                events = link.provider.stream(request)
                try:
                    first = await self._first_event(link, events, remaining)
                except ProviderError as error:
                    await close_upstream(events, link.provider.route)
                    if _says_the_route_is_unwell(error):
                        link.breaker.record_failure(admission)
                    else:  # this request's own fault says nothing about the route
                        link.breaker.release(admission)
                    errors.append(error)
                    if link.breaker.admissible():
                        delay = self._retry_delay(error, attempt, deadline,
                                                  self._fallback_left(position))
                    else:  # this failure opened it: move on, and say when it reopens
                        delay = None
                        reopening.append(link.breaker.reopens_in())
                    _log_attempt(link, attempt, error, delay, asked_at)
                    if delay is None:
                        break
                    await anyio.sleep(delay)
                    continue
                except BaseException:
                    # Cancelled (the client left) or a bug, not the route's doing: its breaker
                    # counts nothing.
                    link.breaker.release(admission)
                    await close_upstream(events, link.provider.route)
                    raise
                link.breaker.record_success(admission)
                _log_answering(link, attempt, asked_at, len(errors),
                               self.links[0] if position else None)
                try:
                    yield RouteAnswering(link.provider.route, link.tier, attempt)
                    if first is not None:
                        yield first
                        async for event in events:
                            yield event
                except ProviderError as error:
                    if _says_the_route_is_unwell(error):
                        link.breaker.record_failure("normal")
                    raise
                finally:
                    await close_upstream(events, link.provider.route)
                return
        raise _exhausted(errors, reopening)

    def _candidates(self, reopening: list[float]) -> Iterator[tuple[int, ChainLink]]:
        """The routes to try, in the chain's order, each judged when its turn comes; but a
        route near its vendor's rate limit goes after the later routes with more room, and
        is still tried when they fail: near its limit is better than no answer."""
        last: list[tuple[int, ChainLink]] = []
        for position, link in enumerate(self.links):
            turn = self._turn(link, position, reopening)
            if turn == "now":
                yield position, link
            elif turn == "last":
                last.append((position, link))
        for position, link in last:
            if link.breaker.admissible() and (link.tier == "primary" or link.cap.take()):
                yield position, link

    def _turn(self, link: ChainLink, position: int,
              reopening: list[float]) -> Literal["now", "last", "skip"]:
        """Disabled, open-breaker and (for fallbacks) capped routes are skipped; the cap is
        only spent on a route that is going to be tried."""
        reason = None
        if link.disabled:
            reason = "disabled"
        elif not link.breaker.admissible():  # open, or another request holds its trial
            reason = "breaker_open"
            reopening.append(link.breaker.reopens_in())
        elif self._near_its_limit(link) and self._roomier_after(position):
            reason = "quota_headroom"
        elif link.tier == "fallback" and not link.cap.take():
            reason = "fallback_cap"
        if reason is not None:
            logger.log(logging.WARNING if reason == "fallback_cap" else logging.INFO,
                       "route_skipped", extra={"model_route": link.provider.route,
                                               "reason": reason})
        if reason is None:
            return "now"
        return "last" if reason == "quota_headroom" else "skip"

    async def _first_event(self, link: ChainLink,
                           events: AsyncGenerator[ChainEvent, None],
                           remaining_s: float) -> ChainEvent | None:
        """The route's first event, within the TTFT timeout and the request deadline."""
        timeout = min(self._policy.ttft_timeout_s, remaining_s)
        try:
            with anyio.fail_after(timeout):
                return await anext(events)
        except TimeoutError:
            raise FirstTokenTimeout(
                f"{link.provider.route}: no first token within {timeout:.1f}s") from None
        except StopAsyncIteration:
            return None

    def _near_its_limit(self, link: ChainLink) -> bool:
        used_at = self._policy.headroom_fallback_at
        return (used_at is not None and link.headroom is not None
                and link.headroom.short(used_at, time.time()) is not None)

    def _roomier_after(self, position: int) -> bool:
        """Whether a later route could take this request now and is not near its own limit."""
        return any(not link.disabled and link.breaker.admissible()
                   and (link.tier == "primary" or link.cap.has_room())
                   and not self._near_its_limit(link)
                   for link in self.links[position + 1:])

    def _fallback_left(self, position: int) -> bool:
        """Whether a later route could take this request now."""
        return any(not link.disabled and link.breaker.admissible()
                   and (link.tier == "primary" or link.cap.has_room())
                   for link in self.links[position + 1:])

    def _retry_delay(self, error: ProviderError, attempt: int, deadline: float,
                     fallback_left: bool) -> float | None:
        """The wait before retrying this route, or None to move on.

        With a fallback left, a route that kept the request waiting (no first token in
        time, or a Retry-After longer than our own longest backoff) is not retried: the
        fallback gets the time instead.
        """
        policy = self._policy
        if not error.retryable or attempt >= policy.max_attempts:
            return None
        if fallback_left and (isinstance(error, FirstTokenTimeout) or (
                error.retry_after is not None and error.retry_after > policy.cap_s)):
            return None
        return retry_delay(attempt, base_s=policy.base_s, cap_s=policy.cap_s,
                           retry_after=error.retry_after,
                           remaining_s=deadline - time.monotonic(), rng=self._rng)

    async def aclose(self) -> None:
        for link in self.links:
            try:
                await link.provider.aclose()
            except Exception:
                logger.exception("provider_close_failed",
                                 extra={"model_route": link.provider.route})


def _says_the_route_is_unwell(error: ProviderError) -> bool:
    """Failures that count towards a route's breaker: not a request the vendor refused."""
    return error.retryable or isinstance(error, ProviderMisconfigured)


def _exhausted(errors: list[ProviderError], reopening: list[float]) -> ProviderError:
    """What the client is told when no route started an answer.

    If every route refused the request itself (a 4xx that is not about keys), it is the
    request, and saying "try again later" would be wrong; anything else is an outage, whose
    Retry-After is the soonest a route may answer again.
    """
    if errors and all(not _says_the_route_is_unwell(e) for e in errors):
        return errors[-1]
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    waits += [w for w in reopening if w != math.inf]
    return AllRoutesFailed(f"all routes failed after {len(errors)} attempts",
                           retry_after=min(waits) if waits else None, attempts=len(errors))


def _log_attempt(link: ChainLink, attempt: int, error: ProviderError,
                 delay: float | None, asked_at: float) -> None:
    if delay is not None:
        RETRIES.labels(link.provider.route, type(error).__name__).inc()
    logger.warning("route_attempt_failed", extra={
        "model_route": link.provider.route,
        "tier": link.tier,
        "attempt": attempt,
        "error_class": type(error).__name__,
        "detail": error.message,
        "status_code": error.status_code,
        "retryable": error.retryable,
        "backoff_s": round(delay, 3) if delay is not None else None,
        "breaker": link.breaker.state,
        "attempt_ms": _ms_since(asked_at),
    })


def _log_answering(link: ChainLink, attempt: int, asked_at: float, failed_attempts: int,
                   passed_over: ChainLink | None) -> None:
    """Once per request, when a route starts its answer (never per token); with a second
    line when that route is not the chain's first, so falling back can be counted by itself."""
    logger.info("route_answering", extra={
        "model_route": link.provider.route,
        "tier": link.tier,
        "attempt": attempt,
        "first_event_ms": _ms_since(asked_at),
        "failed_attempts": failed_attempts,
    })
    if passed_over is not None:
        logger.warning("fallback_used", extra={
            "from_route": passed_over.provider.route,
            "to_route": link.provider.route,
            "tier": link.tier,
            "failed_attempts": failed_attempts,
            "incident_id": None,
        })


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
