"""`hello-ship serve` as a user runs it: flags, workers, the demo answering over curl-like HTTP."""

from __future__ import annotations

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
