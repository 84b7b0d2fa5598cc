"""`hello-ship serve` as a user runs it: flags, workers, the demo answering over curl-like HTTP."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.servers import service_process


def test_serve_answers_health_ready_and_a_streamed_demo_answer() -> None:
    with service_process() as running, httpx.Client(timeout=10) as client:
        assert client.get(running.url + "/health").json() == {"status": "ok"}
        ready = client.get(running.url + "/ready").json()
        assert ready["status"] == "ready"
        (route,) = ready["routes"]
        assert route["route"] == "demo/hello-1" and route["usable"] is True
        with client.stream("POST", running.url + "/chat/stream",
                           json={"message": "hello"}) as response:
            body = "".join(response.iter_text())
    assert "event: token" in body and body.rstrip().split("\n")[-2] == "event: done"


def test_serve_with_two_workers() -> None:
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with service_process(args=("--workers", "2")) as running, \
            httpx.Client(timeout=10, limits=fresh_connections) as client:
        answers = {client.post(running.url + "/chat", json={"message": "same"},
                               headers={"X-Request-ID": f"w{n}"}).json()["answer"]
                   for n in range(20)}
        for n in range(20):
            running.wait_for_log("http_access", request_id=f"w{n}")
        pids = {r["pid"] for r in running.log_records()
                if r["event"] == "http_access" and r.get("path") == "/chat"}
    assert len(pids) == 2  # both workers took connections
    assert len(answers) == 1  # and gave the same deterministic answer


def test_a_chat_in_flight_at_shutdown_gets_a_json_503_within_the_grace() -> None:
    env = {"DEMO_TOKEN_DELAY_MS": "50", "DEMO_ANSWER_TOKENS": "400", "SHUTDOWN_GRACE_S": "0.5"}
    with service_process(env) as running:
        answer: dict[str, httpx.Response] = {}

        def ask() -> None:
            with httpx.Client(timeout=20) as client:
                answer["chat"] = client.post(running.url + "/chat", json={"message": "long"},
                                             headers={"X-Request-ID": "in-flight"})

        asker = threading.Thread(target=ask)
        asker.start()
        running.wait_for_log("request_start", request_id="in-flight")
        signalled = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        asker.join(timeout=15)
        answered_after = time.monotonic() - signalled
        running.proc.wait(timeout=10)
        end = running.wait_for_log("request_end", request_id="in-flight")
    response = answer["chat"]
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "shutting_down" and error["retryable"] is True
    assert answered_after < 3.0  # the grace, not uvicorn's forced cancel
    assert end["status"] == "error" and end["http_status"] == 503


def test_sigterm_drains_ready_goes_503_while_chat_still_answers() -> None:
    with service_process({"DRAIN_DELAY_S": "3"}) as running, \
            httpx.Client(timeout=10) as client:
        assert client.get(running.url + "/ready").status_code == 200
        running.proc.send_signal(signal.SIGTERM)
        running.wait_for_log("drain_started")
        ready = client.get(running.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready" and ready.json()["reasons"] == ["draining"]
        assert client.get(running.url + "/health").status_code == 200
        assert client.post(running.url + "/chat", json={"message": "still?"}).json()["answer"]
        assert running.proc.poll() is None
        assert running.proc.wait(timeout=10) in (0, -signal.SIGTERM)
