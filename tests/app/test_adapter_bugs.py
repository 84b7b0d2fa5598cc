"""A bug in an adapter, end to end: an internal error with its stack trace, not an outage.

The service in front of two fake vendors (an OpenAI primary, an Anthropic fallback), set up
the way an operator would. A `TypeError` planted in the primary's adapter is no vendor
failure: the client gets `internal_error`, the vendor is not asked again, the fallback is not
asked at all, the route's breaker does not count it, and the log has the stack trace.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from config.settings import Settings
from providers import openai_chat
from providers.types import TextDelta
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, ThreadServer, app_server
from tests.sse import parse_sse
from tests.upstreams.common import Upstream
from tests.upstreams.vendors import ANTHROPIC, OPENAI

BODY = {"message": "Say hello."}
FALLBACK = "anthropic/claude-3-5-haiku-20241022"
BUG = "planted adapter bug"
# The first text delta (before any token reached the chain), or the third: "Hello" and ","
# are the client's by then.
BEFORE_THE_FIRST_TOKEN, MID_ANSWER = 1, 3


def chain_settings(primary: Upstream, fallback: Upstream) -> Settings:
    """Retries and a fallback to take, and a breaker that one counted failure opens."""
    values = {**FAST_DEMO, **OPENAI.env(primary), "RETRY_BASE_S": "0.05", "MAX_ATTEMPTS": "3",
              "BREAKER_FAILURES": "1", "BREAKER_COOLDOWN_S": "60",
              "FALLBACK_MODEL": FALLBACK}
    values.update({k: v for k, v in ANTHROPIC.env(fallback).items()
                   if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")})
    return Settings.from_env(values)


def plant_bug(monkeypatch: pytest.MonkeyPatch, on_delta: int) -> None:
    """The OpenAI adapter raises `TypeError` when it builds its `on_delta`-th text delta."""
    calls = itertools.count(1)

    def text_delta(text: str) -> TextDelta:
        if next(calls) == on_delta:
            raise TypeError(BUG)
        return TextDelta(text)

    monkeypatch.setattr(openai_chat, "TextDelta", text_delta)


def completions(upstream: Upstream) -> int:
    """Answers asked for, leaving out the route checks' model listings."""
    return len([r for r in upstream.requests if not r.path.endswith("/models")])


def assert_an_internal_error_and_nothing_else(
        live: ThreadServer, client: httpx.Client, upstreams: tuple[Upstream, Upstream],
        lines: list[dict[str, object]]) -> None:
    primary, fallback = upstreams
    assert completions(primary) == 1, "retried, as if the vendor had failed"
    assert completions(fallback) == 0, "fell back, as if the vendor had failed"
    ready = client.get(live.url + "/ready").json()
    assert [route["breaker"] for route in ready["routes"]] == ["closed", "closed"]
    failed = [line for line in lines if line["event"] == "pipeline_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    stack = failed[0]["exception"]
    assert isinstance(stack, str) and stack.startswith("Traceback (most recent call last):")
    assert "builtins.TypeError" in stack and "providers/openai_chat.py" in stack
    assert BUG not in stack  # messages never reach the log, only types and frames
    assert not [line for line in lines
                if line["event"] in ("provider_failed", "route_attempt_failed", "fallback_used")]


@pytest.mark.parametrize(("on_delta", "frames", "tokens_emitted"), [
    pytest.param(BEFORE_THE_FIRST_TOKEN, ["error"], 0, id="before-the-first-token"),
    pytest.param(MID_ANSWER, ["meta", "token", "error"], 1, id="mid-answer"),
])
def test_an_adapter_bug_ends_the_stream_with_an_internal_error(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client,
        monkeypatch: pytest.MonkeyPatch, on_delta: int, frames: list[str],
        tokens_emitted: int) -> None:
    primary, fallback = upstreams
    with app_server(chain_settings(primary, fallback)) as live:
        plant_bug(monkeypatch, on_delta)
        with captured_logs() as logs:
            response = client.post(live.url + "/chat/stream", json=BODY)
        events = [item.data for item in parse_sse(response.text) if item.is_event]
        assert response.status_code == 200  # the stream had begun
        assert [event["type"] for event in events] == frames
        error = events[-1]
        assert error["code"] == "internal_error" and error["tokens_emitted"] == tokens_emitted
        if tokens_emitted:
            assert events[0]["model_route"] == "openai/gpt-4o-mini"
            assert events[1]["token"] == "Hello,"  # what the client had, kept
        assert_an_internal_error_and_nothing_else(live, client, upstreams, logs.records())


@pytest.mark.parametrize(("on_delta", "tokens_emitted"), [
    pytest.param(BEFORE_THE_FIRST_TOKEN, 0, id="before-the-first-token"),
    pytest.param(MID_ANSWER, 1, id="mid-answer"),
])
def test_an_adapter_bug_is_a_500_on_chat(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client,
        monkeypatch: pytest.MonkeyPatch, on_delta: int, tokens_emitted: int) -> None:
    primary, fallback = upstreams
    with app_server(chain_settings(primary, fallback)) as live:
        plant_bug(monkeypatch, on_delta)
        with captured_logs() as logs:
            response = client.post(live.url + "/chat", json=BODY)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "internal_error" and error["tokens_emitted"] == tokens_emitted
        assert "retry-after" not in response.headers
        assert_an_internal_error_and_nothing_else(live, client, upstreams, logs.records())
