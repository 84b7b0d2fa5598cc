"""The route chain with scripted providers: when it retries, falls back, skips and gives up."""

from __future__ import annotations

import time

import anyio
import pytest

from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.types import ChainEvent, CompletionRequest, Message, RouteAnswering, TextDelta
from streaming.breaker import CircuitBreaker
from streaming.chain import AllRoutesFailed, ChainLink, RetryPolicy, RouteChain
from streaming.fallback_budget import RateCap
from tests.fakes import Fail, ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs

REQUEST = CompletionRequest(messages=(Message("user", "hi"),), max_tokens=50)
FAST = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05, ttft_timeout_s=2.0,
                   request_timeout_s=5.0)


def chain(*providers: ScriptedProvider, policy: RetryPolicy = FAST,
          failures: int = 5, cap: int | None = None) -> RouteChain:
    return RouteChain([
        ChainLink(p, CircuitBreaker(p.route, failures, 60.0), RateCap(cap if i else None),
                  "primary" if i == 0 else "fallback")
        for i, p in enumerate(providers)], policy)


async def run(source: RouteChain) -> tuple[list[ChainEvent], ProviderError | None]:
    events: list[ChainEvent] = []
    try:
        async for event in source.stream(REQUEST):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


def text(events: list[ChainEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def unavailable() -> Fail:
    return Fail(ProviderUnavailable("503", status_code=503))


async def test_a_503_then_success_on_the_same_route() -> None:
    primary = ScriptedProvider(words("all good"), name="a/one", queue=[[unavailable()]])
    with captured_logs() as logs:
        events, error = await run(chain(primary))
    assert error is None and text(events) == "all good"
    assert events[0] == RouteAnswering("a/one", "primary", 2)
    (attempt,) = logs.records("route_attempt_failed")
    assert attempt["attempt"] == 1 and attempt["status_code"] == 503
    assert attempt["retryable"] is True and 0 <= attempt["backoff_s"] <= 0.01


async def test_retry_after_is_waited_for() -> None:
    limited = Fail(ProviderRateLimited("429", status_code=429, retry_after=0.3))
    primary = ScriptedProvider(words("ok"), name="a/one", queue=[[limited]])
    started = time.monotonic()
    _, error = await run(chain(primary))
    assert error is None and time.monotonic() - started >= 0.3
    assert primary.started == 2


@pytest.mark.parametrize("refusal", [ProviderRejected("400", status_code=400),
                                     ProviderMisconfigured("401", status_code=401)])
async def test_a_refusal_is_not_retried_on_the_same_route(refusal: ProviderError) -> None:
    primary = ScriptedProvider([Fail(refusal)], name="a/one")
    events, error = await run(chain(primary))
    assert primary.started == 1 and events == []
    # A bad request is the request's fault; a refused key is an outage.
    assert type(error) is (ProviderRejected if refusal.status_code == 400 else AllRoutesFailed)


async def test_the_fallback_answers_when_the_primary_is_down() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    events, error = await run(chain(primary, fallback))
    assert error is None and text(events) == "from b"
    assert events[0] == RouteAnswering("b/two", "fallback", 1)
    assert primary.started == 3 and fallback.started == 1


async def test_a_primary_without_a_first_token_in_time_falls_back() -> None:
    primary = ScriptedProvider([Sleep(30), "late"], name="a/one")
    fallback = ScriptedProvider(words("quick"), name="b/two")
    policy = RetryPolicy(max_attempts=1, ttft_timeout_s=0.2, request_timeout_s=5)
    started = time.monotonic()
    events, error = await run(chain(primary, fallback, policy=policy))
    assert error is None and text(events) == "quick"
    assert 0.2 <= time.monotonic() - started < 1.0
    assert primary.closed_early == 1  # the hung call was closed, not left running


async def test_after_the_first_token_a_failure_is_passed_on_not_retried() -> None:
    primary = ScriptedProvider(["one", " two", unavailable()], name="a/one")
    fallback = ScriptedProvider(words("never"), name="b/two")
    events, error = await run(chain(primary, fallback))
    assert text(events) == "one two" and isinstance(error, ProviderUnavailable)
    assert primary.started == 1 and fallback.started == 0


async def test_every_route_down_is_all_routes_failed_with_the_shortest_retry_after() -> None:
    first = ScriptedProvider([Fail(ProviderRateLimited("429", retry_after=60))], name="a/one")
    second = ScriptedProvider([Fail(ProviderRateLimited("429", retry_after=30))], name="b/two")
    events, error = await run(chain(first, second))
    assert events == [] and isinstance(error, AllRoutesFailed)
    assert error.retry_after == 30 and error.attempts == 2  # too long to wait: no retries


async def test_retries_never_run_past_the_request_deadline() -> None:
    slow_failure = [Sleep(0.15), unavailable()]
    primary = ScriptedProvider(slow_failure, name="a/one")
    policy = RetryPolicy(max_attempts=50, base_s=0.05, cap_s=0.05, ttft_timeout_s=5,
                         request_timeout_s=0.6)
    started = time.monotonic()
    _, error = await run(chain(primary, policy=policy))
    elapsed = time.monotonic() - started
    assert isinstance(error, AllRoutesFailed) and 2 <= primary.started <= 4
    assert elapsed < 0.6 + 0.4  # the deadline, plus scheduling slack


async def test_an_open_breaker_skips_the_route_until_its_cooldown() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("b"), name="b/two")
    routes = chain(primary, fallback, policy=RetryPolicy(max_attempts=1), failures=2)
    with captured_logs() as logs:
        for _ in range(4):
            events, error = await run(routes)
            assert error is None and events[0].route == "b/two"  # type: ignore[union-attr]
    assert primary.started == 2  # then skipped
    assert [r["reason"] for r in logs.records("route_skipped")] == ["breaker_open"] * 2
    assert routes.links[0].breaker.state == "open"


async def test_the_fallback_cap_limits_how_much_traffic_a_fallback_takes() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("b"), name="b/two")
    routes = chain(primary, fallback, policy=RetryPolicy(max_attempts=1), cap=2)
    results = [await run(routes) for _ in range(3)]
    assert [error is None for _, error in results] == [True, True, False]
    assert isinstance(results[2][1], AllRoutesFailed)


async def test_a_client_leaving_during_a_trial_does_not_wedge_the_breaker() -> None:
    primary = ScriptedProvider([Sleep(30), "late"], name="a/one")
    routes = chain(primary, policy=RetryPolicy(max_attempts=1), failures=1)
    link = routes.links[0]
    link.breaker.record_failure("normal")
    link.breaker._opened_at -= 60  # the cooldown has passed: the next request is the trial
    with anyio.move_on_after(0.1):
        await run(routes)
    assert link.breaker.admit() == "trial"  # the next request may try again


async def test_a_client_error_does_not_count_against_the_route() -> None:
    """Five bad prompts (say, too long) must not take a healthy route out for everyone."""
    primary = ScriptedProvider([Fail(ProviderRejected("400", status_code=400))], name="a/one")
    routes = chain(primary, failures=2)
    for _ in range(5):
        _, error = await run(routes)
        assert isinstance(error, ProviderRejected)
    assert routes.links[0].breaker.state == "closed" and primary.started == 5


async def test_a_retry_stops_once_the_breaker_has_opened() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("b"), name="b/two")
    _, error = await run(chain(primary, fallback, failures=1))
    assert error is None and primary.started == 1 and fallback.started == 1


async def test_a_route_that_kept_the_request_waiting_is_not_retried_before_the_fallback() -> None:
    hung = ScriptedProvider([Sleep(30), "late"], name="a/one")
    limited = ScriptedProvider([Fail(ProviderRateLimited("429", retry_after=60))], name="c/x")
    for primary in (hung, limited):
        fallback = ScriptedProvider(words("b"), name="b/two")
        policy = RetryPolicy(max_attempts=3, ttft_timeout_s=0.2, request_timeout_s=30)
        started = time.monotonic()
        _, error = await run(chain(primary, fallback, policy=policy))
        assert error is None and primary.started == 1 and time.monotonic() - started < 1


async def test_all_breakers_open_give_the_soonest_reopening_as_retry_after() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    routes = chain(primary, policy=RetryPolicy(max_attempts=1), failures=1)
    await run(routes)
    _, error = await run(routes)
    assert isinstance(error, AllRoutesFailed) and 59 < (error.retry_after or 0) <= 60


async def test_the_request_deadline_is_the_one_the_caller_set() -> None:
    primary = ScriptedProvider([Sleep(0.1), unavailable()], name="a/one")
    policy = RetryPolicy(max_attempts=50, base_s=0.01, cap_s=0.01, request_timeout_s=60)
    request = CompletionRequest(REQUEST.messages, 50, deadline_at=time.monotonic() + 0.35)
    started = time.monotonic()
    with pytest.raises(AllRoutesFailed):
        async for _ in chain(primary, policy=policy).stream(request):
            pass
    assert time.monotonic() - started < 0.35 + 0.3


async def test_a_fallback_whose_trial_is_in_flight_is_skipped_without_spending_its_cap() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("b"), name="b/two")
    routes = chain(primary, fallback, policy=RetryPolicy(max_attempts=1), cap=1, failures=1)
    routes.links[0].breaker.record_failure("normal")  # the primary is out too
    breaker = routes.links[1].breaker
    breaker.record_failure("normal")
    breaker._opened_at -= 60
    assert breaker.admit() == "trial"  # another request is trying the fallback
    _, error = await run(routes)
    assert isinstance(error, AllRoutesFailed) and fallback.started == 0
    assert routes.links[1].cap.has_room()


async def test_without_a_usable_fallback_the_primary_gets_its_retries() -> None:
    """A disabled (drill), capped or broken fallback is no reason to stop retrying."""
    primary = ScriptedProvider(words("a"), name="a/one", queue=[[Sleep(30), "late"]])
    fallback = ScriptedProvider(words("b"), name="b/two")
    routes = RouteChain([
        ChainLink(primary, CircuitBreaker("a/one", 5, 60), RateCap(None), "primary"),
        ChainLink(fallback, CircuitBreaker("b/two", 5, 60), RateCap(None), "fallback",
                  disabled=True),
    ], RetryPolicy(max_attempts=3, base_s=0.01, ttft_timeout_s=0.2, request_timeout_s=5))
    events, error = await run(routes)
    assert error is None and text(events) == "a" and primary.started == 2


async def test_a_failure_that_opens_the_breaker_moves_on_without_waiting() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    fallback = ScriptedProvider(words("b"), name="b/two")
    slow_backoff = RetryPolicy(max_attempts=3, base_s=5, cap_s=5, request_timeout_s=30)
    started = time.monotonic()
    with captured_logs() as logs:
        _, error = await run(chain(primary, fallback, policy=slow_backoff, failures=1))
    assert error is None and time.monotonic() - started < 1
    assert logs.records("route_attempt_failed")[0]["backoff_s"] is None


async def test_the_failure_that_opens_the_breaker_sets_retry_after_to_the_cooldown() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    _, error = await run(chain(primary, failures=2))
    assert isinstance(error, AllRoutesFailed) and error.attempts == 2
    assert 59 < (error.retry_after or 0) <= 60
