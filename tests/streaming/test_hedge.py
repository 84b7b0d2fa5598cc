"""Hedged requests in the route chain, with scripted providers: when a second route is asked,
which one answers, and that the other is closed and accounted for."""

from __future__ import annotations

import time

import anyio
from prometheus_client import REGISTRY

from providers.errors import ProviderRejected
from providers.tokens import count_tokens
from providers.types import CompletionRequest, Message, RouteAnswering, TextDelta
from streaming.chain import AllRoutesFailed, RetryPolicy, RouteChain
from tests.fakes import Fail, ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs
from tests.streaming.test_chain import errors_logged, is_ms, link, run, text, unavailable
from tests.telemetry.test_log_schema import assert_documented

HEDGED = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05, ttft_timeout_s=5.0,
                     request_timeout_s=10.0, hedge_after_s=0.2)
REQUEST = CompletionRequest(messages=(Message("user", "hi"),), max_tokens=50)


def hedged(*providers: ScriptedProvider, policy: RetryPolicy = HEDGED,
           cap: int | None = None) -> RouteChain:
    return RouteChain([link(p, "primary" if i == 0 else "fallback", cap=cap if i else None)
                       for i, p in enumerate(providers)], policy)


def counted(name: str, route: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"route": route, **labels}) or 0.0


async def first_text_after(routes: RouteChain) -> tuple[float, list[object]]:
    """Seconds to the chain's first text, and every event of the answer."""
    started = time.monotonic()
    first_at = None
    events: list[object] = []
    async for event in routes.stream(REQUEST):
        if isinstance(event, TextDelta) and first_at is None:
            first_at = time.monotonic() - started
        events.append(event)
    assert first_at is not None
    return first_at, events


async def test_a_slow_primary_is_overtaken_by_the_hedge_which_answers_alone() -> None:
    primary = ScriptedProvider([Sleep(1.5), *words("from the primary")], name="hedge/slow")
    fallback = ScriptedProvider(words("from the fallback"), name="hedge/quick")
    won_before = counted("hello_ship_hedges_won_total", "hedge/quick")
    started_before = counted("hello_ship_hedges_started_total", "hedge/quick")
    billed_before = counted("hello_ship_tokens_total", "hedge/slow", direction="input")
    with captured_logs() as logs:
        ttft, events = await first_text_after(hedged(primary, fallback))
    assert 0.2 <= ttft < 1.0  # the hedge delay and the fallback's own start, not 1.5 s
    assert events[0] == RouteAnswering("hedge/quick", "fallback", 1)
    assert text(events) == "from the fallback"  # type: ignore[arg-type]
    assert primary.closed_early == 1 and primary.open_streams == 0  # hung up on, not left
    assert fallback.finished == 1
    lines = [line for line in logs.records() if line["logger"].startswith("hello_ship.")]
    for line in lines:
        assert_documented(line)
    assert [line["event"] for line in lines] == [
        "hedge_started", "hedge_cancelled", "route_answering", "fallback_used"]
    started, cancelled, answering, _ = lines
    assert (started["model_route"], started["tier"], started["from_route"]) == (
        "hedge/quick", "fallback", "hedge/slow")
    assert is_ms(started["waited_ms"], 200) and started["waited_ms"] < 500
    assert (cancelled["model_route"], cancelled["tier"], cancelled["attempt"],
            cancelled["won_by"], cancelled["output_tokens_est"]) == (
        "hedge/slow", "primary", 1, "hedge/quick", 0)
    assert cancelled["input_tokens_est"] == count_tokens("hi")
    assert (answering["model_route"], answering["hedge"], answering["failed_attempts"]) == (
        "hedge/quick", "won", 0)
    assert counted("hello_ship_hedges_started_total", "hedge/quick") == started_before + 1
    assert counted("hello_ship_hedges_won_total", "hedge/quick") == won_before + 1
    # The cancelled call read the prompt: its route is counted for it.
    assert counted("hello_ship_tokens_total", "hedge/slow",
                   direction="input") == billed_before + count_tokens("hi")
    assert errors_logged(logs) == []


async def test_without_hedging_a_slow_primary_answers_as_before() -> None:
    primary = ScriptedProvider([Sleep(0.6), *words("from a")], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    off = RetryPolicy(max_attempts=3, ttft_timeout_s=5.0, request_timeout_s=10.0)
    with captured_logs() as logs:
        ttft, events = await first_text_after(hedged(primary, fallback, policy=off))
    assert ttft >= 0.6 and text(events) == "from a"  # type: ignore[arg-type]
    assert fallback.started == 0 and logs.records("hedge_started") == []
    assert logs.records("route_answering")[0]["hedge"] is None


async def test_a_primary_starting_before_the_hedge_delay_is_never_hedged() -> None:
    primary = ScriptedProvider([Sleep(0.05), "from", Sleep(0.3), " a"], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    with captured_logs() as logs:
        _, events = await first_text_after(hedged(primary, fallback))
    # Slow tokens after the first are no reason to hedge: the answer has started.
    assert text(events) == "from a" and fallback.started == 0  # type: ignore[arg-type]
    assert logs.records("hedge_started") == logs.records("hedge_cancelled") == []
    [answering] = logs.records("route_answering")
    assert answering["hedge"] is None


async def test_the_primary_winning_the_race_cancels_the_hedge() -> None:
    primary = ScriptedProvider([Sleep(0.4), *words("from a")], name="race/primary")
    fallback = ScriptedProvider([Sleep(3), *words("from b")], name="race/fallback")
    won_before = counted("hello_ship_hedges_won_total", "race/fallback")
    routes = hedged(primary, fallback)
    with captured_logs() as logs:
        ttft, events = await first_text_after(routes)
    assert 0.4 <= ttft < 1.0 and text(events) == "from a"  # type: ignore[arg-type]
    assert events[0] == RouteAnswering("race/primary", "primary", 1)
    assert fallback.started == 1 and fallback.closed_early == 1 and fallback.open_streams == 0
    [cancelled] = logs.records("hedge_cancelled")
    assert (cancelled["model_route"], cancelled["won_by"]) == ("race/fallback", "race/primary")
    [answering] = logs.records("route_answering")
    assert answering["hedge"] == "lost" and logs.records("fallback_used") == []
    assert counted("hello_ship_hedges_won_total", "race/fallback") == won_before
    # Cancelled, not failed: neither route's breaker counts anything.
    assert [link.breaker.state for link in routes.links] == ["closed", "closed"]
    assert routes.links[1].breaker._failures == 0


async def test_no_hedge_once_the_fallback_cap_is_used_up() -> None:
    primary = ScriptedProvider([Sleep(0.5), *words("from a")], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    routes = hedged(primary, fallback, cap=1)
    with captured_logs() as logs:
        _, first = await first_text_after(routes)  # takes the cap's one use
        _, second = await first_text_after(routes)
    assert text(first) == "from b" and text(second) == "from a"  # type: ignore[arg-type]
    assert fallback.started == 1 and len(logs.records("hedge_started")) == 1
    [skipped] = logs.records("route_skipped")
    assert (skipped["model_route"], skipped["reason"], skipped["level"]) == (
        "b/two", "fallback_cap", "warning")


async def test_a_fallback_with_an_open_breaker_is_not_asked_as_a_hedge() -> None:
    primary = ScriptedProvider([Sleep(0.5), *words("from a")], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    routes = RouteChain([link(primary, "primary"), link(fallback, failures=1)], HEDGED)
    routes.links[1].breaker.record_failure("normal")
    with captured_logs() as logs:
        _, events = await first_text_after(routes)
    assert text(events) == "from a" and fallback.started == 0  # type: ignore[arg-type]
    assert [line["reason"] for line in logs.records("route_skipped")] == ["breaker_open"]
    assert logs.records("hedge_started") == []


async def test_the_hedge_goes_to_the_next_usable_route() -> None:
    primary = ScriptedProvider([Sleep(1.5), *words("from a")], name="a/one")
    disabled = ScriptedProvider(words("from b"), name="b/two")
    third = ScriptedProvider(words("from c"), name="c/three")
    routes = RouteChain([link(primary, "primary"), link(disabled, disabled=True),
                         link(third)], HEDGED)
    with captured_logs() as logs:
        ttft, events = await first_text_after(routes)
    assert ttft < 1.0 and text(events) == "from c"  # type: ignore[arg-type]
    assert disabled.started == 0 and primary.closed_early == 1
    [started] = logs.records("hedge_started")
    assert started["model_route"] == "c/three"


async def test_a_primary_failing_before_the_hedge_delay_is_retried_as_usual() -> None:
    """The delay counts from each attempt: the quick failure is retried, and the retry, slow
    in its turn, is hedged."""
    primary = ScriptedProvider([Sleep(1.5), *words("from a")], name="a/one",
                               queue=[[unavailable()]])
    fallback = ScriptedProvider(words("from b"), name="b/two")
    with captured_logs() as logs:
        _, events = await first_text_after(hedged(primary, fallback))
    assert text(events) == "from b" and primary.started == 2  # type: ignore[arg-type]
    [failed] = logs.records("route_attempt_failed")
    assert failed["model_route"] == "a/one" and failed["backoff_s"] is not None
    [started] = logs.records("hedge_started")
    assert is_ms(started["waited_ms"], 200)
    [answering] = logs.records("route_answering")
    assert (answering["hedge"], answering["failed_attempts"]) == ("won", 1)


async def test_a_hedge_failing_leaves_the_slow_route_to_answer() -> None:
    primary = ScriptedProvider([Sleep(0.8), *words("from a")], name="a/one")
    fallback = ScriptedProvider([unavailable()], name="b/two")
    with captured_logs() as logs:
        ttft, events = await first_text_after(hedged(primary, fallback))
    assert 0.8 <= ttft < 1.5 and text(events) == "from a"  # type: ignore[arg-type]
    # The hedge's route is retried as any route is, while the slow one keeps running.
    assert fallback.started == 3 and primary.started == 1
    failures = logs.records("route_attempt_failed")
    assert [(line["model_route"], line["attempt"]) for line in failures] == [
        ("b/two", 1), ("b/two", 2), ("b/two", 3)]
    [answering] = logs.records("route_answering")
    assert (answering["model_route"], answering["hedge"], answering["failed_attempts"]) == (
        "a/one", "lost", 3)
    assert logs.records("hedge_cancelled") == []  # nothing was left to cancel


async def test_a_slow_route_failing_after_the_hedge_started_is_not_retried() -> None:
    primary = ScriptedProvider([Sleep(0.4), unavailable()], name="a/one")
    fallback = ScriptedProvider([Sleep(0.6), *words("from b")], name="b/two")
    with captured_logs() as logs:
        ttft, events = await first_text_after(hedged(primary, fallback))
    assert 0.8 <= ttft < 1.5 and text(events) == "from b"  # type: ignore[arg-type]
    assert primary.started == 1  # its place is taken by the hedge
    [failed] = logs.records("route_attempt_failed")
    assert (failed["model_route"], failed["backoff_s"]) == ("a/one", None)
    assert_documented(failed)
    [answering] = logs.records("route_answering")
    assert (answering["hedge"], answering["failed_attempts"]) == ("won", 1)


async def test_both_failing_is_all_routes_failed() -> None:
    primary = ScriptedProvider([Sleep(0.3), unavailable()], name="a/one")
    fallback = ScriptedProvider([Sleep(0.2), Fail(ProviderRejected("400", status_code=400))],
                                name="b/two")
    events, error = await run(hedged(primary, fallback))
    # Not every route refused the request itself: it is an outage.
    assert events == [] and isinstance(error, AllRoutesFailed) and error.attempts == 2
    assert primary.started == 1 and fallback.started == 1
    assert primary.open_streams == fallback.open_streams == 0


async def test_a_client_leaving_during_the_race_closes_both_calls() -> None:
    primary = ScriptedProvider([Sleep(30), "late"], name="a/one")
    fallback = ScriptedProvider([Sleep(30), "late"], name="b/two")
    routes = RouteChain([link(primary, "primary", failures=1), link(fallback)], HEDGED)
    with captured_logs() as logs:
        with anyio.move_on_after(0.5):
            await run(routes)
    assert primary.closed_early == fallback.closed_early == 1
    assert logs.records("hedge_cancelled") == [] and errors_logged(logs) == []
    assert [link.breaker.state for link in routes.links] == ["closed", "closed"]


async def test_a_route_pinned_alone_is_never_hedged() -> None:
    primary = ScriptedProvider([Sleep(0.4), *words("from a")], name="a/one")
    fallback = ScriptedProvider(words("from b"), name="b/two")
    pinned = hedged(primary, fallback).pinned("a/one")
    assert pinned is not None
    _, events = await first_text_after(pinned)
    assert text(events) == "from a" and fallback.started == 0  # type: ignore[arg-type]


async def test_a_bug_in_a_racing_route_is_raised_and_the_other_closed() -> None:
    primary = ScriptedProvider([Sleep(30), "late"], name="a/one")
    fallback = ScriptedProvider([Sleep(0.1), Fail(RuntimeError("adapter bug"))], name="b/two")
    routes = RouteChain([link(primary, "primary"), link(fallback)], HEDGED)
    try:
        await run(routes)
    except RuntimeError as raised:
        assert str(raised) == "adapter bug"
    else:
        raise AssertionError("the bug was swallowed")
    assert primary.closed_early == fallback.closed_early == 1
    assert [link.breaker._failures for link in routes.links] == [0, 0]

