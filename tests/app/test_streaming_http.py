"""The SSE contract and /chat, through uvicorn on a loopback port and a real HTTP client."""

from __future__ import annotations

import re
import time

import httpx

from providers.errors import ProviderUnavailable
from tests.fakes import Fail, ScriptedProvider, Sleep, words
from tests.logcapture import captured_logs
from tests.servers import app_server, settings_from
from tests.sse import SSEItem, iter_sse

BODY = {"message": "What is the refund policy?"}


def stream_items(client: httpx.Client, url: str, body: object = BODY,
                 **kwargs: object) -> tuple[httpx.Response, list[tuple[float, SSEItem]]]:
    items = []
    with client.stream("POST", url + "/chat/stream", json=body, **kwargs) as response:
        for item in iter_sse(response.iter_lines()):
            items.append((time.monotonic(), item))
    return response, items


def events(items: list[tuple[float, SSEItem]]) -> list[SSEItem]:
    return [item for _, item in items if item.is_event]


def test_frames_arrive_incrementally_well_before_the_stream_ends() -> None:
    settings = settings_from(DEMO_TTFT_MS="50", DEMO_TOKEN_DELAY_MS="20",
                             DEMO_ANSWER_TOKENS="40")
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        response, items = stream_items(client, live.url)
    first_token_at = next(at for at, item in items if item.event == "token")
    ended_at = items[-1][0]
    # ~40 tokens 20 ms apart: the first must arrive long before the last
    assert first_token_at - started < 0.4
    assert ended_at - first_token_at > 0.5
    assert response.status_code == 200


def test_sse_wire_contract() -> None:
    # With nothing to guard, every model token is its own frame, sent as it arrives.
    unguarded = settings_from(GUARD_OUTPUT_PII="allow", GUARD_OUTPUT_SECRETS="allow")
    with app_server(unguarded) as live, httpx.Client(timeout=10) as client:
        response, items = stream_items(client, live.url,
                                       headers={"X-Request-ID": "client-id-42"})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"] == "client-id-42"
    assert items[0][1].retry == 3000
    frames = events(items)
    assert [int(f.id or "-1") for f in frames] == list(range(len(frames)))
    assert all(f.data["type"] == f.event for f in frames)
    assert frames[0].data == {"type": "meta", "request_id": "client-id-42",
                              "model_route": "demo/hello-1",
                              "stream_id": frames[0].data["stream_id"]}
    assert re.fullmatch(r"str_[0-9a-f]{24}", frames[0].data["stream_id"])  # for a resume
    assert [f.event for f in frames[1:-1]] == ["token"] * (len(frames) - 2)
    done = frames[-1].data
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert done["usage"]["output_tokens"] == len(frames) - 2
    assert done["model_route"] == "demo/hello-1"


def test_chat_and_stream_return_the_same_text() -> None:
    with app_server() as live, httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url, {"message": "same text please", "max_tokens": 30})
        answer = client.post(live.url + "/chat", json={"message": "same text please",
                                                       "max_tokens": 30})
    streamed = "".join(f.data["token"] for f in events(items) if f.event == "token")
    body = answer.json()
    assert body["answer"] == streamed
    assert body["request_id"] == answer.headers["x-request-id"]
    assert body["model_route"] == "demo/hello-1"
    assert body["finish_reason"] == "length"
    assert body["usage"] == events(items)[-1].data["usage"]


def test_heartbeats_on_a_quiet_stream_not_on_a_busy_one() -> None:
    quiet = settings_from(HEARTBEAT_S="0.1", DEMO_TTFT_MS="450", DEMO_ANSWER_TOKENS="5")
    with app_server(quiet) as live, httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url)
    before_first_token = []
    for _, item in items:
        if item.event == "token":
            break
        before_first_token.extend(item.comments)
    assert before_first_token.count("heartbeat") >= 2  # ~4 expected; the machine may lag

    # ~1 s of tokens 10 ms apart: longer than the interval, with no gap anywhere near it
    busy = settings_from(HEARTBEAT_S="0.4", DEMO_TTFT_MS="0", DEMO_TOKEN_DELAY_MS="10",
                         DEMO_ANSWER_TOKENS="100")
    with app_server(busy) as live, httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url)
    assert not any(item.comments for _, item in items)
    assert events(items)[-1].event == "done"


def test_provider_failure_before_the_first_token_is_one_error_frame() -> None:
    settings = settings_from(DEMO_FAIL_AFTER_TOKENS="0", DEMO_FAIL_STATUS="503")
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        response, items = stream_items(client, live.url)
        chat = client.post(live.url + "/chat", json=BODY)
    frames = events(items)
    assert [f.event for f in frames] == ["error"]
    error = frames[0].data
    assert error["code"] == "provider_unavailable"
    assert error["retryable"] is True and error["tokens_emitted"] == 0
    assert error["incident_id"].startswith("inc_")
    assert error["request_id"] == response.headers["x-request-id"]

    assert chat.status_code == 503
    # Three failed tries, then two more: the fifth in a row opens the route's breaker
    # (BREAKER_FAILURES=5), so the client is told when the route is tried again.
    assert chat.headers["retry-after"] == "30"
    envelope = chat.json()["error"]
    assert envelope["code"] == "provider_unavailable"
    assert envelope["request_id"] == chat.headers["x-request-id"]
    assert envelope["incident_id"].startswith("inc_")
    assert "503" not in envelope["message"] and "demo" not in envelope["message"]


def test_provider_failure_after_tokens_keeps_the_partial_text() -> None:
    settings = settings_from(DEMO_FAIL_AFTER_TOKENS="4")
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url, {"message": "/echo one two three four five"})
        chat = client.post(live.url + "/chat", json={"message": "/echo one two three four"})
    frames = events(items)
    assert [f.event for f in frames] == ["meta"] + ["token"] * (len(frames) - 2) + ["error"]
    # the word the guard still held when the answer broke off is sent before the error
    assert "".join(f.data["token"] for f in frames[1:-1]) == "one two three four"
    error = frames[-1].data
    assert error["code"] == "stream_interrupted" and error["tokens_emitted"] == len(frames) - 2
    assert chat.status_code == 502
    assert chat.json()["error"]["tokens_emitted"] == error["tokens_emitted"]


def test_an_unexpected_provider_bug_is_a_safe_error_not_a_traceback() -> None:
    secret = "-".join(["sk", "secret", "in", "message"])
    provider = ScriptedProvider([Sleep(0.01), Fail(ZeroDivisionError(secret))])
    with captured_logs() as logs, app_server(provider=provider) as live, \
            httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url)
        chat = client.post(live.url + "/chat", json=BODY)
    error = events(items)[-1].data
    assert error["code"] == "internal_error"
    assert chat.status_code == 500
    assert secret not in chat.text and "Traceback" not in chat.text
    assert all(secret not in str(item.data_lines) for _, item in items)
    failures = logs.records("pipeline_failed")
    assert len(failures) == 2 and all("ZeroDivisionError" in f["exception"] for f in failures)
    assert not [line for line in logs.lines if secret in line]


def test_a_split_surrogate_pair_from_a_provider_still_gives_valid_frames_and_json() -> None:
    provider = ScriptedProvider(["grin ", "\ud83d", "\ude01"])
    with app_server(provider=provider) as live, httpx.Client(timeout=10) as client:
        _, items = stream_items(client, live.url)
        chat = client.post(live.url + "/chat", json=BODY)
    frames = events(items)
    assert [f.event for f in frames] == ["meta"] + ["token"] * (len(frames) - 2) + ["done"]
    assert "".join(f.data["token"] for f in frames[1:-1]) == "grin \ufffd\ufffd"
    assert chat.status_code == 200 and chat.json()["answer"] == "grin \ufffd\ufffd"


def test_a_failing_route_does_not_disturb_other_requests() -> None:
    provider = ScriptedProvider([*words("ok then"), Fail(ProviderUnavailable("x"))])
    with app_server(provider=provider) as live, httpx.Client(timeout=10) as client:
        for _ in range(3):
            _, items = stream_items(client, live.url)
            assert events(items)[-1].event == "error"
        assert client.get(live.url + "/health").json() == {"status": "ok"}
        assert client.get(live.url + "/ready").json()["status"] == "ready"


def test_max_tokens_is_clamped_to_the_server_limit() -> None:
    settings = settings_from(MAX_OUTPUT_TOKENS="7", DEMO_ANSWER_TOKENS="100")
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        body = client.post(live.url + "/chat", json={"message": "hi", "max_tokens": 10**9}).json()
        smaller = client.post(live.url + "/chat", json={"message": "hi", "max_tokens": 3}).json()
    assert body["usage"]["output_tokens"] == 7 and body["finish_reason"] == "length"
    assert smaller["usage"]["output_tokens"] == 3


def test_system_prompt_is_prepended_server_side() -> None:
    provider = ScriptedProvider(words("fine"))
    settings = settings_from(SYSTEM_PROMPT="You are terse.")
    with app_server(settings, provider) as live, httpx.Client(timeout=10) as client:
        client.post(live.url + "/chat", json={"messages": [
            {"role": "user", "content": "hi"}]}).raise_for_status()
    (request,) = provider.requests
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "You are terse."), ("user", "hi")]
