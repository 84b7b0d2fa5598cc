"""The service's stdout, read back: JSON lines, a request id on each, no user text."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from tests.servers import ServiceProcess, service_process

SECRET_TEXT = "my card is 4111 1111 1111 1111 and my name is Zebulon Quixote"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    env = {"DEMO_FAIL_AFTER_TOKENS": "-1", "LOG_HASH_KEY": "k" * 32}
    with service_process(env) as running:
        with httpx.Client(timeout=10) as client:
            client.post(running.url + "/chat", json={"message": SECRET_TEXT, "feature": "faq"},
                        headers={"traceparent": TRACEPARENT, "X-Request-ID": "trace-me"})
            with client.stream("POST", running.url + "/chat/stream",
                               json={"messages": [{"role": "user", "content": SECRET_TEXT}]},
                               headers={"X-Request-ID": "streamed"}) as response:
                for _ in response.iter_lines():
                    pass
            client.post(running.url + "/chat", content=b'{"message": "' + SECRET_TEXT.encode(),
                        headers={"Content-Type": "application/json", "X-Request-ID": "bad"})
            drop_mid_stream(running.url)
            client.get(running.url + "/my-card-" + SECRET_TEXT.split()[3])
        running.wait_for_log("request_end", request_id="dropped")
        running.wait_for_log("http_access", path="<unmatched>")
        yield running


def drop_mid_stream(url: str) -> None:
    address = urlparse(url)
    body = orjson.dumps({"message": SECRET_TEXT})
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\nX-Request-ID: dropped\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
        seen = b""
        while b"event: token" not in seen:
            seen += sock.recv(4096)


def lines_for(service: ServiceProcess, request_id: str) -> list[dict[str, Any]]:
    return [r for r in service.log_records() if r.get("request_id") == request_id]


def test_every_line_is_json_without_user_text(service: ServiceProcess) -> None:
    assert service.lines
    for line in service.lines:
        record = orjson.loads(line)
        assert {"ts", "level", "logger", "event"} <= record.keys()
        for fragment in ("4111", "Zebulon", "Quixote", "my card"):
            assert fragment not in line


def test_a_request_has_start_end_and_access_lines(service: ServiceProcess) -> None:
    records = lines_for(service, "trace-me")
    assert [r["event"] for r in records] == [
        "request_start", "route_answering", "request_end", "http_access"]
    assert all(r["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" for r in records)
    assert all(r["log_schema"] == 1 for r in records)
    start, answering, end, access = records
    assert (answering["model_route"], answering["tier"], answering["attempt"]) == (
        "demo/hello-1", "primary", 1)
    assert start["tenant_id"] == "anonymous" and start["feature"] == "faq"
    assert start["input_chars"] == len(SECRET_TEXT)
    assert len(start["input_hash"]) == 16
    assert start["stream"] is False and start["model_route"] == "demo/hello-1"
    assert start["prompt_version"] == "unversioned"
    for field in ("tenant_id", "feature", "model_route", "prompt_version", "stream", "status",
                  "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "tokens_emitted"):
        assert field in end, field
    assert end["status"] == "ok" and end["http_status"] == 200
    # token frames: the output guard sends the model's tokens a sentence at a time
    assert end["output_tokens"] > end["tokens_emitted"] > 0
    assert 0 < end["ttft_ms"] <= end["latency_ms"]
    assert access["method"] == "POST" and access["path"] == "/chat" and access["status"] == 200


def test_same_text_hashes_alike_across_endpoints(service: ServiceProcess) -> None:
    chat = lines_for(service, "trace-me")[0]
    stream = lines_for(service, "streamed")[0]
    assert chat["input_hash"] == stream["input_hash"]
    assert stream["stream"] is True


def test_unknown_paths_are_not_logged(service: ServiceProcess) -> None:
    paths = [r["path"] for r in service.log_records() if r["event"] == "http_access"]
    assert "<unmatched>" in paths
    assert set(paths) <= {"/chat", "/chat/stream", "<unmatched>"}


def test_a_rejected_request_logs_its_code(service: ServiceProcess) -> None:
    events = {r["event"]: r for r in lines_for(service, "bad")}
    assert events["request_rejected"]["code"] == "invalid_json"
    assert events["http_access"]["status"] == 400


def test_a_client_that_left_is_logged_as_such(service: ServiceProcess) -> None:
    end = next(r for r in lines_for(service, "dropped") if r["event"] == "request_end")
    assert end["status"] == "client_disconnected"
    assert end["tokens_emitted"] >= 1


def test_a_stream_failing_midway_logs_code_incident_and_tokens() -> None:
    with service_process({"DEMO_FAIL_AFTER_TOKENS": "3"}) as running:
        with httpx.Client(timeout=10) as client:
            response = client.post(running.url + "/chat/stream", json={"message": "hello"},
                                   headers={"X-Request-ID": "fails"})
        end = running.wait_for_log("request_end", request_id="fails")
        attempt = running.wait_for_log("provider_failed", request_id="fails")
    assert end["status"] == "error" and end["error_code"] == "stream_interrupted"
    # the token frames that carried the three tokens before the error frame
    sent = response.text.count("event: token")
    assert end["tokens_emitted"] == sent >= 1 and end["incident_id"].startswith("inc_")
    assert attempt["route"] == "demo/hello-1" and attempt["status_code"] == 503
    assert attempt["error_class"] == "ProviderUnavailable"


def test_shutdown_mid_stream_ends_it_with_one_terminal_frame() -> None:
    env = {"DEMO_TOKEN_DELAY_MS": "50", "DEMO_ANSWER_TOKENS": "400", "SHUTDOWN_GRACE_S": "0.3"}
    with service_process(env) as running, httpx.Client(timeout=20) as client:
        kinds: list[str] = []
        with client.stream("POST", running.url + "/chat/stream",
                           json={"message": "long"}) as response:
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
                    if kinds.count("token") == 3:
                        running.proc.send_signal(signal.SIGTERM)
                        sent_at = time.monotonic()
        ended_after = time.monotonic() - sent_at
        # uvicorn re-raises the signal once it has shut down cleanly
        assert running.proc.wait(timeout=10) in (0, -signal.SIGTERM)
        running.wait_for_log_prefix("Finished server process", timeout=1)
    assert kinds[-1] == "error" and kinds.count("error") == 1 and "done" not in kinds
    assert ended_after < 2.0
    # The log tells the shutdown step by step, and which answer it cut.
    steps = [r for r in running.log_records() if r["event"] in (
        "drain_started", "shutdown_started", "shutdown_cut", "shutdown_complete")]
    assert [r["event"] for r in steps] == [
        "drain_started", "shutdown_started", "shutdown_cut", "shutdown_complete"]
    drain, started, cut, complete = steps
    assert drain["signal"] == started["signal"] == complete["signal"] == "SIGTERM"
    assert started["grace_s"] == 0.3
    assert cut["request_id"] == request_id and cut["tokens_emitted"] >= 1
    assert cut["model_route"] == "demo/hello-1"
    end = running.wait_for_log("request_end", request_id=request_id)
    assert end["error_code"] == "shutting_down"
