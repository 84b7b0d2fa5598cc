"""The route chain with scripted providers: when it retries, falls back, skips and gives up."""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY

from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.types import ChainEvent, CompletionRequest, Message, RouteAnswering, TextDelta
from streaming.breaker import CircuitBreaker
from streaming.chain import AllRoutesFailed, ChainLink, RetryPolicy, RouteChain, Tier
from streaming.fallback_budget import RateCap
from tests.fakes import Fail, ScriptedProvider, Sleep, Step, words
from tests.logcapture import CapturedLogs, captured_logs
from tests.telemetry.test_log_schema import assert_documented

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


class TopOfRange(random.Random):
    """Jitter that always draws the top of its range: backoffs become exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def link(provider: ScriptedProvider, tier: Tier = "fallback", *, failures: int = 5,
         clock: Clock | None = None, cap: int | None = None,
         disabled: bool = False) -> ChainLink:
    breaker = CircuitBreaker(provider.route, failures, 60.0, clock=clock or time.monotonic)
    return ChainLink(provider, breaker, RateCap(cap), tier, disabled)


def due_for_a_trial(route_link: ChainLink, clock: Clock) -> None:
    """Open the link's breaker (threshold 1) and let its cool-down pass."""
    route_link.breaker.record_failure("normal")
    clock.now += 60


def errors_logged(logs: CapturedLogs) -> list[dict[str, Any]]:
    return [line for line in logs.records() if line["level"] == "error"]


def retries(route: str, error_class: str = "ProviderUnavailable") -> float | None:
    return REGISTRY.get_sample_value("hello_ship_retries_total",
                                     {"route": route, "error_class": error_class})


def is_ms(value: Any, at_least: float) -> bool:
    """A duration in milliseconds, to a tenth: a float, not a rounded int."""
    return isinstance(value, float) and at_least <= value < 10_000 and value == round(value, 1)


async def test_each_attempt_and_the_route_that_answers_are_logged_as_documented() -> None:
    failing = [Sleep(0.05), unavailable()]
    primary = ScriptedProvider(failing, name="logs/primary")
    fallback = ScriptedProvider([Sleep(0.05), *words("from b")], name="logs/fallback")
    policy = RetryPolicy(max_attempts=3, base_s=0.0123456, cap_s=1.0, request_timeout_s=10)
    routes = RouteChain([link(primary, "primary"), link(fallback)], policy, rng=TopOfRange())
    retried_before = retries("logs/primary") or 0.0
    with captured_logs() as logs:
        events, error = await run(routes)
    assert error is None and text(events) == "from b"
    assert primary.requests == [REQUEST] * 3 and fallback.requests == [REQUEST]
    lines = [line for line in logs.records() if line["logger"].startswith("hello_ship.")]
    for line in lines:
        assert_documented(line)
    assert [line["event"] for line in lines] == [
        "route_attempt_failed", "route_attempt_failed", "route_attempt_failed",
        "route_answering", "fallback_used"]
    attempts = lines[:3]
    assert [(line["model_route"], line["tier"], line["attempt"], line["backoff_s"])
            for line in attempts] == [("logs/primary", "primary", 1, 0.012),
                                      ("logs/primary", "primary", 2, 0.025),
                                      ("logs/primary", "primary", 3, None)]
    for line in attempts:
        assert (line["error_class"], line["detail"], line["status_code"], line["retryable"],
                line["breaker"]) == ("ProviderUnavailable", "503", 503, True, "closed")
        assert is_ms(line["attempt_ms"], 50)
    answering, fallback_used = lines[3:]
    assert {key: answering[key] for key in ("model_route", "tier", "attempt",
                                            "failed_attempts")} == {
        "model_route": "logs/fallback", "tier": "fallback", "attempt": 1, "failed_attempts": 3}
    assert is_ms(answering["first_event_ms"], 50)
    assert {key: fallback_used[key] for key in ("from_route", "to_route", "tier",
                                                "failed_attempts", "incident_id")} == {
        "from_route": "logs/primary", "to_route": "logs/fallback", "tier": "fallback",
        "failed_attempts": 3, "incident_id": None}
    assert (retries("logs/primary") or 0.0) - retried_before == 2  # those followed by a retry
    assert errors_logged(logs) == []


async def test_the_first_route_answering_is_no_fallback() -> None:
    primary = ScriptedProvider(words("from a"), name="a/one")
    with captured_logs() as logs:
        events, error = await run(chain(primary, ScriptedProvider(words("b"), name="b/two")))
    assert error is None and text(events) == "from a"
    [answering] = logs.records("route_answering")
    assert (answering["model_route"], answering["attempt"], answering["failed_attempts"]) == (
        "a/one", 1, 0)
    assert logs.records("fallback_used") == [] and errors_logged(logs) == []


async def test_a_route_without_a_first_token_in_time_says_so() -> None:
    hung = ScriptedProvider([Sleep(30), "late"], name="a/one")
    policy = RetryPolicy(max_attempts=1, ttft_timeout_s=0.2, request_timeout_s=5)
    with captured_logs() as logs:
        _, error = await run(chain(hung, policy=policy))
    assert isinstance(error, AllRoutesFailed)
    assert (error.message, error.attempts) == ("all routes failed after 1 attempts", 1)
    [line] = logs.records("route_attempt_failed")
    assert_documented(line)
    assert (line["error_class"], line["detail"], line["status_code"]) == (
        "FirstTokenTimeout", "a/one: no first token within 0.2s", None)
    assert hung.closed_early == 1 and errors_logged(logs) == []


async def test_skipped_routes_say_why_at_their_level() -> None:
    clock = Clock()
    disabled = ScriptedProvider(words("a"), name="skip/disabled")
    broken = ScriptedProvider(words("b"), name="skip/broken")
    capped = ScriptedProvider(words("c"), name="skip/capped")
    answering = ScriptedProvider(words("from d"), name="skip/answering")
    links = [link(disabled, "primary", disabled=True), link(broken, failures=1, clock=clock),
             link(capped, cap=0), link(answering)]
    links[1].breaker.record_failure("normal")
    with captured_logs() as logs:
        events, error = await run(RouteChain(links, FAST))
    assert error is None and text(events) == "from d"
    assert disabled.started == broken.started == capped.started == 0
    skipped = logs.records("route_skipped")
    for line in skipped:
        assert_documented(line)
    assert [(line["model_route"], line["reason"], line["level"]) for line in skipped] == [
        ("skip/disabled", "disabled", "info"), ("skip/broken", "breaker_open", "info"),
        ("skip/capped", "fallback_cap", "warning")]
    [used] = logs.records("fallback_used")
    assert (used["from_route"], used["to_route"], used["failed_attempts"]) == (
        "skip/disabled", "skip/answering", 0)


async def test_a_request_whose_deadline_has_passed_tries_no_route() -> None:
    """The deadline runs out before an attempt starts: nothing is sent, a trial the request
    was handed is given back, and the client hears when a route may answer again."""
    clock, broken_clock = Clock(), Clock()
    broken = ScriptedProvider(words("a"), name="a/one")
    recovering = ScriptedProvider(words("b"), name="b/two")
    links = [link(broken, "primary", failures=1, clock=broken_clock),
             link(recovering, failures=1, clock=clock)]
    links[0].breaker.record_failure("normal")  # open for 60 s
    due_for_a_trial(links[1], clock)
    late = CompletionRequest(REQUEST.messages, 50, deadline_at=time.monotonic() - 1)
    with pytest.raises(AllRoutesFailed) as raised:
        async for _ in RouteChain(links, FAST).stream(late):
            pass
    assert broken.started == recovering.started == 0
    assert raised.value.attempts == 0 and raised.value.retry_after == 60
    assert raised.value.message == "all routes failed after 0 attempts"
    assert links[1].breaker.admit() == "trial"  # the next request may still try it


async def test_a_breaker_opened_by_other_requests_during_a_backoff_ends_the_retries() -> None:
    primary = ScriptedProvider([unavailable()], name="a/one")
    policy = RetryPolicy(max_attempts=3, base_s=0.4, cap_s=0.4, request_timeout_s=10)
    routes = RouteChain([link(primary, "primary", failures=3)], policy, rng=TopOfRange())
    breaker = routes.links[0].breaker
    outcome: list[ProviderError | None] = []

    async def request() -> None:
        outcome.append((await run(routes))[1])

    async with anyio.create_task_group() as group:
        group.start_soon(request)
        await anyio.sleep(0.1)  # the first attempt failed at once; its backoff is 0.4 s
        assert primary.started == 1
        breaker.record_failure("normal")  # two other requests fail meanwhile: it opens
        breaker.record_failure("normal")
    [error] = outcome
    assert isinstance(error, AllRoutesFailed) and primary.started == 1
    assert error.attempts == 1 and 59 < (error.retry_after or 0) <= 60


async def test_a_trial_settles_the_breaker_whichever_way_it_ends() -> None:
    clock = Clock()

    async def trial(script: list[Step]) -> tuple[CircuitBreaker, ProviderError | None]:
        provider = ScriptedProvider(script, name="a/one")
        routes = RouteChain([link(provider, "primary", failures=1, clock=clock)], FAST)
        due_for_a_trial(routes.links[0], clock)
        _, error = await run(routes)
        return routes.links[0].breaker, error

    healed, error = await trial(words("ok"))
    assert error is None and healed.state == "closed"
    failed, error = await trial([unavailable()])
    assert failed.state == "open" and failed.reopens_in() == 60
    assert isinstance(error, AllRoutesFailed) and error.retry_after == 60
    refused, error = await trial([Fail(ProviderRejected("400", status_code=400))])
    assert isinstance(error, ProviderRejected)  # the request's fault, not the route's:
    assert refused.admit() == "trial"  # the next request gets the trial


@pytest.mark.parametrize("unusable", ["disabled", "capped", "broken"])
async def test_a_hung_primary_is_retried_when_no_fallback_could_take_over(
        unusable: str) -> None:
    primary = ScriptedProvider(words("a"), name="a/one", queue=[[Sleep(30), "late"]])
    fallback = ScriptedProvider(words("b"), name="b/two")
    fallback_link = link(fallback, disabled=unusable == "disabled",
                         cap=0 if unusable == "capped" else None,
                         failures=1 if unusable == "broken" else 5)
    if unusable == "broken":
        fallback_link.breaker.record_failure("normal")
    policy = RetryPolicy(max_attempts=3, base_s=0.01, ttft_timeout_s=0.2, request_timeout_s=5)
    events, error = await run(RouteChain([link(primary, "primary"), fallback_link], policy))
    assert error is None and text(events) == "a" and primary.started == 2


async def test_a_retry_after_as_long_as_our_longest_backoff_is_waited_for() -> None:
    limited = Fail(ProviderRateLimited("429", status_code=429, retry_after=0.05))
    primary = ScriptedProvider(words("a"), name="a/one", queue=[[limited]])
    fallback = ScriptedProvider(words("b"), name="b/two")
    events, error = await run(chain(primary, fallback))  # FAST: cap_s is 0.05
    assert error is None and text(events) == "a" and primary.started == 2


async def test_a_retry_after_past_the_deadline_is_not_waited_for() -> None:
    limited = Fail(ProviderRateLimited("429", status_code=429, retry_after=0.5))
    primary = ScriptedProvider(words("a"), name="a/one", queue=[[limited]])
    request = CompletionRequest(REQUEST.messages, 50, deadline_at=time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(AllRoutesFailed) as raised:
        async for _ in chain(primary).stream(request):
            pass
    assert time.monotonic() - started < 0.3 and primary.started == 1
    assert raised.value.retry_after == 0.5


def test_a_chain_needs_a_route() -> None:
    with pytest.raises(ValueError) as refused:
        RouteChain([], FAST)
    assert str(refused.value) == "a chain needs at least one route"


async def test_a_client_leaving_before_the_first_token_closes_the_call_quietly() -> None:
    hung = ScriptedProvider([Sleep(30), "late"], name="a/one")
    with captured_logs() as logs:
        with anyio.move_on_after(0.1):
            await run(chain(hung))
    assert hung.closed_early == 1 and errors_logged(logs) == []


async def test_a_cleanup_failing_after_the_reader_stopped_is_logged_with_its_route() -> None:
    answering = ScriptedProvider(words("one two three"), name="c/three",
                                 release_error=RuntimeError("cleanup broke"))
    with captured_logs() as logs:
        stream = chain(answering).stream(REQUEST)
        assert await anext(stream) == RouteAnswering("c/three", "primary", 1)
        await anext(stream)
        await stream.aclose()  # the reader stopped mid-answer
        assert answering.closed_early == 1
    [line] = logs.records("provider_close_failed")
    assert_documented(line)
    assert line["route"] == "c/three" and "RuntimeError" in line["exception"]


async def test_a_pinned_route_is_that_route_alone_as_the_chain_has_it() -> None:
    clock = Clock()
    primary = ScriptedProvider(words("a"), name="a/one")
    fallback = ScriptedProvider([unavailable()], name="b/two")
    policy = RetryPolicy(max_attempts=3, base_s=0.0123456, cap_s=1.0, request_timeout_s=5)
    routes = RouteChain([link(primary, "primary"), link(fallback, failures=1, clock=clock)],
                        policy, rng=TopOfRange())
    assert routes.pinned("c/three") is None
    pinned = routes.pinned("b/two")
    assert pinned is not None and pinned.links == (routes.links[1],)
    with captured_logs() as logs:
        _, error = await run(pinned)
    assert isinstance(error, AllRoutesFailed) and primary.started == 0
    [attempt] = logs.records("route_attempt_failed")  # its breaker opened at once
    assert (attempt["model_route"], attempt["tier"], attempt["breaker"]) == (
        "b/two", "fallback", "open")
    clock.now += 60
    retried = RouteChain([link(fallback, "primary", failures=5)], policy, rng=TopOfRange())
    with captured_logs() as logs:
        await run(retried.pinned("b/two"))  # type: ignore[arg-type]
    assert [line["backoff_s"] for line in logs.records("route_attempt_failed")] == [
        0.012, 0.025, None]  # the chain's jitter, drawn by the chain's generator


class Unclosable(ScriptedProvider):
    async def aclose(self) -> None:
        raise RuntimeError("close broke")


async def test_closing_the_chain_closes_every_route_even_when_one_fails_to() -> None:
    closed: list[str] = []

    class Closing(ScriptedProvider):
        async def aclose(self) -> None:
            closed.append(self.name)

    routes = chain(Closing(words("a"), name="a/one"), Unclosable(words("b"), name="b/two"),
                   Closing(words("c"), name="c/three"))
    with captured_logs() as logs:
        await routes.aclose()
    assert closed == ["a/one", "c/three"]
    [line] = logs.records("provider_close_failed")
    assert (line["logger"], line["level"], line["model_route"]) == (
        "hello_ship.chain", "error", "b/two")
    assert "RuntimeError" in line["exception"]
