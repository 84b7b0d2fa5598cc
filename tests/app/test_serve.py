"""`hello-ship serve` as a user runs it: flags, workers, the demo answering over curl-like HTTP."""

from __future__ import annotations

import signal

import httpx

from tests.servers import service_process


def test_serve_answers_health_ready_and_a_streamed_demo_answer() -> None:
    with service_process() as running, httpx.Client(timeout=10) as client:
        assert client.get(running.url + "/health").json() == {"status": "ok"}
        ready = client.get(running.url + "/ready").json()
        assert ready == {"status": "ready", "routes": [{"route": "demo/hello-1", "ready": True}]}
        with client.stream("POST", running.url + "/chat/stream",
                           json={"message": "hello"}) as response:
            body = "".join(response.iter_text())
    assert "event: token" in body and body.rstrip().split("\n")[-2] == "event: done"


def test_serve_with_two_workers() -> None:
    with service_process(args=("--workers", "2")) as running, httpx.Client(timeout=10) as client:
        answers = {client.post(running.url + "/chat", json={"message": "same"}).json()["answer"]
                   for _ in range(6)}
    assert len(answers) == 1  # every worker gives the same deterministic answer


def test_sigterm_drains_ready_goes_503_while_chat_still_answers() -> None:
    with service_process({"DRAIN_DELAY_S": "1.5"}) as running, \
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
