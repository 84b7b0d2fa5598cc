"""Closing a provider stream: always, within a bound, and a failing close only logged."""

from __future__ import annotations

import time

import anyio
import pytest

from providers.types import CompletionRequest, Message
from streaming import upstream
from streaming.upstream import close_upstream
from tests.fakes import ScriptedProvider, words
from tests.logcapture import captured_logs
from tests.telemetry.test_log_schema import assert_documented

REQUEST = CompletionRequest(messages=(Message("user", "hi"),), max_tokens=10)


async def test_a_cleanup_that_fails_is_logged_with_the_route_and_not_raised() -> None:
    provider = ScriptedProvider(words("one two"), release_error=RuntimeError("cleanup broke"))
    events = provider.stream(REQUEST)
    await anext(events)
    with captured_logs() as logs:
        await close_upstream(events, "a/one")
    assert provider.closed_early == 1
    [line] = logs.records("provider_close_failed")
    assert_documented(line)
    assert line["route"] == "a/one" and "RuntimeError" in line["exception"]


async def test_a_cleanup_that_hangs_is_given_up_on_even_when_cancelled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "UPSTREAM_CLOSE_TIMEOUT_S", 0.2)
    provider = ScriptedProvider(words("one two"), release_s=30)
    events = provider.stream(REQUEST)
    await anext(events)
    started = time.monotonic()
    with anyio.CancelScope() as scope:
        scope.cancel()  # the caller was cancelled: the close still runs, shielded
        await close_upstream(events, "a/one")
    assert provider.closed_early == 1 and 0.2 <= time.monotonic() - started < 1
