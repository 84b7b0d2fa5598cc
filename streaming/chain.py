"""The route chain: retries with backoff, fallback to the next route, a breaker per route.

Everything here happens before the first event of an answer. A failure then (an error, or no
first token within `ttft_timeout_s`) is retried on the same route while retrying can help
and fits the request deadline, then the next route is tried, invisibly to the client. Once a
route has produced its first event the chain says so (`RouteAnswering`) and relays that
route to the end: an answer is never spliced from two models, so a failure after that point
reaches the pipeline as it is.

With `hedge_after_s` (HEDGE_AFTER_MS), a route that has not started its answer that long after
it was asked gets company: the next usable route is asked too, as a fallback would be (its
breaker, its fallback cap), while the first keeps going. Whichever starts first answers; the
other is cancelled and its vendor call closed. At most one hedge a request.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import anyio

from providers.base import Provider
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
)
from providers.headroom import Headroom
from providers.tokens import count_tokens
from providers.types import ChainEvent, CompletionRequest, RouteAnswering, TextDelta
from streaming.backoff import retry_delay
from streaming.breaker import Admission, CircuitBreaker
from streaming.fallback_budget import RateCap
from streaming.race import Race
from streaming.upstream import close_upstream
from telemetry.metrics import HEDGES_STARTED, HEDGES_WON, RETRIES, TOKENS

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
    # A route silent this long after it was asked gets the next route asked beside it
    # (HEDGE_AFTER_MS); None: never.
    hedge_after_s: float | None = None


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
        opening = _Opening(self, request)
        won = await opening.run()
        link, events = won.link, won.events
        link.breaker.record_success(won.admission)
        if won.hedge:
            HEDGES_WON.labels(link.provider.route).inc()
        _log_answering(link, won.number, won.asked_at, len(opening.errors),
                       self.links[0] if won.position else None,
                       None if opening.hedge is None else "won" if won.hedge else "lost")
        try:
            yield RouteAnswering(link.provider.route, link.tier, won.number)
            if won.first is not None:
                yield won.first
                async for event in events:
                    yield event
        except ProviderError as error:
            if _says_the_route_is_unwell(error):
                link.breaker.record_failure("normal")
            raise
        finally:
            await close_upstream(events, link.provider.route)

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


@dataclass(eq=False, slots=True)
class _Attempt:
    """One call to one route, from asking it to its first event."""

    link: ChainLink
    position: int  # in the chain's links
    number: int  # 1, 2, ... on its route
    admission: Admission
    asked_at: float
    events: AsyncGenerator[ChainEvent, None]
    hedge: bool = False  # asked beside a slow route, not after its failure
    first: ChainEvent | None = None  # once it has started the answer


_Outcome = ChainEvent | None | Exception


class _Opening:
    """One request's way to the route that answers it: the routes in the chain's order, each
    retried while that can help; with hedging, the next route also asked while the current one
    is slow. `run` returns the attempt that produced the first event, and leaves no other
    attempt open: each is closed, its breaker admission settled or given back."""

    def __init__(self, chain: RouteChain, request: CompletionRequest) -> None:
        self._chain = chain
        self._request = request
        policy = chain._policy
        self._deadline = request.deadline_at or time.monotonic() + policy.request_timeout_s
        self._hedge_after_s = policy.hedge_after_s if len(chain.links) > 1 else None
        self.errors: list[ProviderError] = []
        self._reopening: list[float] = []  # when the routes skipped for open breakers reopen
        self._candidates = chain._candidates(self._reopening)
        self._turn: tuple[int, ChainLink] | None = None  # the route being tried
        self._tries = 0  # attempts made on it
        self._current: _Attempt | None = None  # its attempt in flight
        self._retry_at: float | None = None  # its next attempt, after a backoff
        # Asked and not started yet: the current attempt and, after a hedge, the slow one.
        self._pending: list[_Attempt] = []
        self.hedge: _Attempt | None = None  # the attempt asked as the hedge
        self._hedge_tried = False
        self._race: Race[_Attempt, ChainEvent | None] | None = None

    async def run(self) -> _Attempt:
        won: _Attempt | None = None
        try:
            if self._hedge_after_s is None:
                won = await self._walk()
            else:
                failure: Exception | None = None
                async with anyio.create_task_group() as group:
                    self._race = Race(group)
                    try:
                        won = await self._walk()
                    except Exception as error:  # raised past the group as it is, ungrouped
                        failure = error
                    finally:
                        self._race.cancel()
                if failure is not None:
                    raise failure
        except BaseException:
            if won is not None:  # cancelled while the others were being stopped
                self._pending.append(won)
                won = None
            raise
        finally:
            await self._close_pending(won)
        assert won is not None  # `_walk` returns an attempt or raises
        return won

    async def _walk(self) -> _Attempt:
        while True:
            if self._current is None and self._retry_at is None:
                self._ask_next()
                if not self._pending:
                    raise _exhausted(self.errors, self._reopening)
            now = time.monotonic()
            if not self._pending:  # only a backoff to wait out
                assert self._retry_at is not None
                await anyio.sleep(self._retry_at - now)
                self._retry_at = None
                continue
            timers = [at for at in (self._retry_at, self._hedge_at()) if at is not None]
            ended = await self._next(min(timers) - now if timers else None)
            if ended is None:
                self._on_timer()
                continue
            attempt, outcome = ended
            self._pending.remove(attempt)
            if isinstance(outcome, ProviderError):
                await self._failed(attempt, outcome)
            elif isinstance(outcome, Exception):
                # A bug, not the route's doing: its breaker counts nothing.
                attempt.link.breaker.release(attempt.admission)
                await close_upstream(attempt.events, attempt.link.provider.route)
                raise outcome
            else:
                attempt.first = outcome
                if attempt is self._current:
                    self._current = None
                return attempt

    def _ask_next(self) -> None:
        """Ask the route being tried again, or the next one; nothing when none is left."""
        while True:
            if self._turn is None:
                self._turn, self._tries = next(self._candidates, None), 0
                if self._turn is None:
                    return
            position, link = self._turn
            admission = link.breaker.admit()
            if admission is None:  # opened by this request's failures, or by others'
                self._reopening.append(link.breaker.reopens_in())
                self._turn = None
                continue
            if self._deadline <= time.monotonic():
                link.breaker.release(admission)
                raise _exhausted(self.errors, self._reopening)
            self._tries += 1
            attempt = _Attempt(link, position, self._tries, admission, time.monotonic(),
                               link.provider.stream(self._request))
            self._pending.append(attempt)
            self._current = attempt
            if self._race is not None:
                self._race.start(attempt, partial(
                    self._chain._first_event, link, attempt.events,
                    self._deadline - attempt.asked_at))
            return

    async def _next(self, timeout_s: float | None) -> tuple[_Attempt, _Outcome] | None:
        """The next attempt to start or fail, or None when `timeout_s` passes first."""
        if self._race is not None:
            return await self._race.next(timeout_s)
        attempt = self._pending[0]  # alone: nothing else could happen meanwhile
        try:
            return attempt, await self._chain._first_event(
                attempt.link, attempt.events, self._deadline - attempt.asked_at)
        except ProviderError as error:
            return attempt, error

    def _hedge_at(self) -> float | None:
        if self._hedge_after_s is None or self._hedge_tried or self._current is None:
            return None
        return self._current.asked_at + self._hedge_after_s

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
        hedge_at = self._hedge_at()
        if hedge_at is not None and now >= hedge_at:
            self._start_hedge()

    def _start_hedge(self) -> None:
        """Ask the next usable route beside the slow current one, which keeps its place in
        the race but gets no retry: the chain has moved on to the hedge's route."""
        self._hedge_tried = True
        slow = self._current
        assert slow is not None
        turn, tries = self._turn, self._tries
        self._turn = None
        self._ask_next()
        if self._current is slow:  # no route left to ask: the slow one stays the current
            self._turn, self._tries = turn, tries
            return
        hedge = self.hedge = self._current
        assert hedge is not None
        hedge.hedge = True
        HEDGES_STARTED.labels(hedge.link.provider.route).inc()
        logger.info("hedge_started", extra={
            "model_route": hedge.link.provider.route,
            "tier": hedge.link.tier,
            "from_route": slow.link.provider.route,
            "waited_ms": _ms_since(slow.asked_at),
        })

    async def _failed(self, attempt: _Attempt, error: ProviderError) -> None:
        link = attempt.link
        await close_upstream(attempt.events, link.provider.route)
        if _says_the_route_is_unwell(error):
            link.breaker.record_failure(attempt.admission)
        else:  # this request's own fault says nothing about the route
            link.breaker.release(attempt.admission)
        self.errors.append(error)
        delay = None
        if not link.breaker.admissible():  # this failure opened it: say when it reopens
            self._reopening.append(link.breaker.reopens_in())
        elif attempt is self._current:  # a slow route a hedge overtook is not retried
            delay = self._chain._retry_delay(error, attempt.number, self._deadline,
                                             self._chain._fallback_left(attempt.position))
        _log_attempt(link, attempt.number, error, delay, attempt.asked_at)
        if attempt is self._current:
            self._current = None
            if delay is None:
                self._turn = None
            else:
                self._retry_at = time.monotonic() + delay

    async def _close_pending(self, won: _Attempt | None) -> None:
        """Close the attempts still open. Beside an attempt that won, each was a hedge race's
        loser, which the vendor bills for the prompt it read: counted as a cancelled answer's
        prompt is, estimated."""
        pending, self._pending = self._pending, []
        self._current = None  # nothing is retried from here
        for attempt in pending:
            outcome = self._race.outcome(attempt) if self._race is not None else None
            if isinstance(outcome, ProviderError):  # it failed as the other one won
                await self._failed(attempt, outcome)
                continue
            attempt.link.breaker.release(attempt.admission)
            await close_upstream(attempt.events, attempt.link.provider.route)
            if won is not None:
                self._bill_loser(attempt, won, outcome)

    def _bill_loser(self, loser: _Attempt, won: _Attempt, outcome: _Outcome) -> None:
        route = loser.link.provider.route
        input_tokens = sum(count_tokens(m.content) for m in self._request.messages)
        output_tokens = int(isinstance(outcome, TextDelta))  # it started as the other won
        TOKENS.labels(route, "input").inc(input_tokens)
        if output_tokens:
            TOKENS.labels(route, "output").inc(output_tokens)
        logger.info("hedge_cancelled", extra={
            "model_route": route,
            "tier": loser.link.tier,
            "attempt": loser.number,
            "won_by": won.link.provider.route,
            "attempt_ms": _ms_since(loser.asked_at),
            "input_tokens_est": input_tokens,
            "output_tokens_est": output_tokens,
        })


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
                   passed_over: ChainLink | None, hedge: Literal["won", "lost"] | None) -> None:
    """Once per request, when a route starts its answer (never per token); with a second
    line when that route is not the chain's first, so falling back can be counted by itself."""
    logger.info("route_answering", extra={
        "model_route": link.provider.route,
        "tier": link.tier,
        "attempt": attempt,
        "first_event_ms": _ms_since(asked_at),
        "failed_attempts": failed_attempts,
        "hedge": hedge,
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
