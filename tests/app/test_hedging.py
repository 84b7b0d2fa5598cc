"""Hedged requests end to end: the service in front of two real (fake) vendors, an OpenAI-protocol
primary that is slow to start and an Anthropic fallback, configured as an operator would."""

from __future__ import annotations

import time

import httpx
from prometheus_client import REGISTRY

from tests.app.test_fallback import BODY, FALLBACK, PRIMARY, chain_settings, completions
from tests.logcapture import captured_logs
from tests.servers import ThreadServer, app_server
from tests.sse import iter_sse
from tests.telemetry.test_log_schema import assert_documented
from tests.upstreams.common import Script, Upstream

PRIMARY_TEXT = ("From", " the", " primary.")
FALLBACK_TEXT = ("From", " the", " fallback.")


def stream(client: httpx.Client, live: ThreadServer) -> tuple[float, list[dict[str, object]]]:
    """Seconds from sending the request to the first token frame, and the frames."""
    sent = time.monotonic()
    first = None
    frames: list[dict[str, object]] = []
    with client.stream("POST", live.url + "/chat/stream", json=BODY) as response:
        assert response.status_code == 200
        for item in iter_sse(response.iter_lines()):
            if item.is_event:
                frames.append(item.data)
                if item.event == "token" and first is None:
                    first = time.monotonic() - sent
    assert first is not None, frames
    return first, frames


def answer_text(frames: list[dict[str, object]]) -> str:
    return "".join(str(frame["token"]) for frame in frames if frame["type"] == "token")


def hedges(metric: str) -> float:
    return REGISTRY.get_sample_value(f"hello_ship_hedges_{metric}_total",
                                     {"route": FALLBACK}) or 0.0


def slow_primary(primary: Upstream, fallback: Upstream, first_token_s: float = 1.5) -> None:
    primary.script = Script(tokens=PRIMARY_TEXT, first_token_s=first_token_s)
    fallback.script = Script(tokens=FALLBACK_TEXT)


def test_a_slow_primary_is_overtaken_by_the_fallback_and_hung_up_on(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    slow_primary(primary, fallback)
    settings = chain_settings(primary, fallback, HEDGE_AFTER_MS="200")
    started, won = hedges("started"), hedges("won")
    with captured_logs() as logs, app_server(settings) as live:
        sent = time.monotonic()
        ttft, frames = stream(client, live)
        # The primary's call was closed before its first token was due (1.5 s).
        assert primary.wait_for_outcomes() == ["client_closed"]
        closed_after = time.monotonic() - sent
        collected = client.post(live.url + "/chat", json=BODY).json()
    assert ttft < 1.0 and closed_after < 1.4
    assert frames[0]["type"] == "meta" and frames[0]["model_route"] == FALLBACK
    assert answer_text(frames) == "From the fallback."  # nothing of the primary's
    assert frames[-1]["type"] == "done" and frames[-1]["model_route"] == FALLBACK
    assert collected["model_route"] == FALLBACK and collected["answer"] == "From the fallback."
    assert len(completions(primary)) == len(completions(fallback)) == 2
    assert (hedges("started") - started, hedges("won") - won) == (2, 2)
    for event in ("hedge_started", "hedge_cancelled", "route_answering", "request_end"):
        for line in logs.records(event):
            assert_documented(line)
    first_started, _ = logs.records("hedge_started")
    assert (first_started["from_route"], first_started["model_route"]) == (PRIMARY, FALLBACK)
    assert 200 <= first_started["waited_ms"] < 1000
    assert {line["won_by"] for line in logs.records("hedge_cancelled")} == {FALLBACK}
    assert [line["hedge"] for line in logs.records("route_answering")] == ["won", "won"]
    ends = logs.records("request_end")
    assert [(end["model_route"], end["fallback_tier"]) for end in ends] == [
        (FALLBACK, "fallback")] * 2


def test_hedging_is_off_by_default(upstreams: tuple[Upstream, Upstream],
                                   client: httpx.Client) -> None:
    primary, fallback = upstreams
    slow_primary(primary, fallback, first_token_s=1.0)
    with captured_logs() as logs, app_server(chain_settings(primary, fallback)) as live:
        ttft, frames = stream(client, live)
    assert ttft >= 1.0 and answer_text(frames) == "From the primary."
    assert frames[-1]["model_route"] == PRIMARY and completions(fallback) == []
    assert logs.records("hedge_started") == []


def test_a_primary_starting_in_time_is_not_hedged(upstreams: tuple[Upstream, Upstream],
                                                  client: httpx.Client) -> None:
    primary, fallback = upstreams
    slow_primary(primary, fallback, first_token_s=0.1)
    settings = chain_settings(primary, fallback, HEDGE_AFTER_MS="800")
    with captured_logs() as logs, app_server(settings) as live:
        _, frames = stream(client, live)
    assert answer_text(frames) == "From the primary." and completions(fallback) == []
    assert logs.records("hedge_started") == []
    [answering] = logs.records("route_answering")
    assert (answering["model_route"], answering["hedge"]) == (PRIMARY, None)


def test_the_primary_winning_the_race_hangs_up_on_the_fallback(
        upstreams: tuple[Upstream, Upstream], client: httpx.Client) -> None:
    primary, fallback = upstreams
    primary.script = Script(tokens=PRIMARY_TEXT, first_token_s=0.6)
    fallback.script = Script(tokens=FALLBACK_TEXT, first_token_s=5)
    settings = chain_settings(primary, fallback, HEDGE_AFTER_MS="200")
    started, won = hedges("started"), hedges("won")
    with captured_logs() as logs, app_server(settings) as live:
        sent = time.monotonic()
        ttft, frames = stream(client, live)
        assert fallback.wait_for_outcomes() == ["client_closed"]
        closed_after = time.monotonic() - sent
    assert 0.6 <= ttft < 1.5 and closed_after < 2.0  # not the fallback's 5 s
    assert answer_text(frames) == "From the primary." and frames[-1]["model_route"] == PRIMARY
    assert len(completions(fallback)) == 1
    assert (hedges("started") - started, hedges("won") - won) == (1, 0)
    [cancelled] = logs.records("hedge_cancelled")
    assert (cancelled["model_route"], cancelled["won_by"]) == (FALLBACK, PRIMARY)
    [end] = logs.records("request_end")
    assert (end["model_route"], end["fallback_tier"]) == (PRIMARY, "primary")
    assert logs.records("fallback_used") == []


def test_no_hedge_once_the_fallback_cap_is_used_up(upstreams: tuple[Upstream, Upstream],
                                                   client: httpx.Client) -> None:
    primary, fallback = upstreams
    slow_primary(primary, fallback, first_token_s=0.8)
    settings = chain_settings(primary, fallback, HEDGE_AFTER_MS="200", FALLBACK_MAX_RPM="1")
    with captured_logs() as logs, app_server(settings) as live:
        _, hedged = stream(client, live)
        ttft, capped = stream(client, live)
    assert hedged[-1]["model_route"] == FALLBACK  # the cap's one use this minute
    assert capped[-1]["model_route"] == PRIMARY and ttft >= 0.8
    assert answer_text(capped) == "From the primary." and len(completions(fallback)) == 1
    assert len(logs.records("hedge_started")) == 1
    [skipped] = logs.records("route_skipped")
    assert (skipped["model_route"], skipped["reason"]) == (FALLBACK, "fallback_cap")
