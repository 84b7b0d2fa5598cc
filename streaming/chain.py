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
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal

import anyio

from providers.base import Provider
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.types import ChainEvent, CompletionRequest, RouteAnswering, RouteHealth
from streaming.backoff import retry_delay
from streaming.breaker import CircuitBreaker
from streaming.fallback_budget import RateCap
from streaming.upstream import close_upstream

logger = logging.getLogger("hello_ship.chain")

Tier = Literal["primary", "fallback"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # per route
    base_s: float = 0.5
    cap_s: float = 8.0
    ttft_timeout_s: float = 30.0
    request_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class ChainLink:
    provider: Provider
    breaker: CircuitBreaker
    cap: RateCap  # how much traffic this route may take as a fallback
    tier: Tier
    disabled: bool = False  # taken out by the operator (a drill, a vendor incident)


class AllRoutesFailed(ProviderUnavailable):
    """No route could start an answer: the client gets the degraded copy."""

    def __init__(self, message: str, *, retry_after: float | None, attempts: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.attempts = attempts


class RouteChain:
    """A `Provider` made of routes in order; `route` names the primary."""

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

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ChainEvent, None]:
        policy = self._policy
        deadline = time.monotonic() + policy.request_timeout_s
        errors: list[ProviderError] = []
        for link in self.links:
            if not self._admit(link):
                continue
            for attempt in range(1, policy.max_attempts + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events = link.provider.stream(request)
                try:
                    first = await self._first_event(link, events, remaining)
                except ProviderError as error:
                    await close_upstream(events, link.provider.route)
                    link.breaker.record_failure()
                    errors.append(error)
                    delay = self._retry_delay(error, attempt, deadline)
                    _log_attempt(link, attempt, error, delay)
                    if delay is None:
                        break
                    await anyio.sleep(delay)
                    continue
                except BaseException:  # cancelled: the client left while it was tried
                    link.breaker.release()
                    await close_upstream(events, link.provider.route)
                    raise
                link.breaker.record_success()
                try:
                    yield RouteAnswering(link.provider.route, link.tier, attempt)
                    if first is not None:
                        yield first
                        async for event in events:
                            yield event
                except ProviderError:
                    link.breaker.record_failure()
                    raise
                finally:
                    await close_upstream(events, link.provider.route)
                return
        raise _exhausted(errors)

    def _admit(self, link: ChainLink) -> bool:
        if link.disabled:
            logger.info("route_skipped", extra={"model_route": link.provider.route,
                                                "reason": "disabled"})
            return False
        if not link.breaker.allow():
            logger.info("route_skipped", extra={"model_route": link.provider.route,
                                                "reason": "breaker_open"})
            return False
        if link.tier == "fallback" and not link.cap.take():
            logger.warning("route_skipped", extra={"model_route": link.provider.route,
                                                   "reason": "fallback_cap"})
            return False
        return True

    async def _first_event(self, link: ChainLink,
                           events: AsyncGenerator[ChainEvent, None],
                           remaining_s: float) -> ChainEvent | None:
        """The route's first event, within the TTFT timeout and the request deadline."""
        timeout = min(self._policy.ttft_timeout_s, remaining_s)
        try:
            with anyio.fail_after(timeout):
                return await anext(events)
        except TimeoutError:
            raise ProviderUnavailable(
                f"{link.provider.route}: no first token within {timeout:.1f}s") from None
        except StopAsyncIteration:
            return None

    def _retry_delay(self, error: ProviderError, attempt: int, deadline: float) -> float | None:
        if not error.retryable or attempt >= self._policy.max_attempts:
            return None
        return retry_delay(attempt, base_s=self._policy.base_s, cap_s=self._policy.cap_s,
                           retry_after=error.retry_after,
                           remaining_s=deadline - time.monotonic(), rng=self._rng)

    async def probe(self) -> RouteHealth:
        return await self.links[0].provider.probe()

    async def aclose(self) -> None:
        for link in self.links:
            try:
                await link.provider.aclose()
            except Exception:
                logger.exception("provider_close_failed",
                                 extra={"model_route": link.provider.route})


def _exhausted(errors: list[ProviderError]) -> ProviderError:
    """What the client is told when no route started an answer.

    If every route refused the request itself (a 4xx that is not about keys), it is the
    request, and saying "try again later" would be wrong; anything else is an outage.
    """
    if errors and all(isinstance(e, ProviderRejected)
                      and not isinstance(e, ProviderMisconfigured) for e in errors):
        return errors[-1]
    retry_afters = [e.retry_after for e in errors if e.retry_after is not None]
    return AllRoutesFailed(f"all routes failed after {len(errors)} attempts",
                           retry_after=min(retry_afters) if retry_afters else None,
                           attempts=len(errors))


def _log_attempt(link: ChainLink, attempt: int, error: ProviderError,
                 delay: float | None) -> None:
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
    })
