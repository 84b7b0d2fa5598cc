"""`hello-ship serve` as a user runs it: flags, workers, the demo answering over curl-like HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.servers import FAST_DEMO, service_process


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


@pytest.mark.parametrize(("args", "stop"), [
    ((), signal.SIGTERM),
    ((), signal.SIGINT),
    (("--workers", "2"), signal.SIGTERM),
], ids=["sigterm", "sigint", "sigterm-two-workers"])
def test_a_clean_shutdown_on_a_stop_signal_exits_0(args: tuple[str, ...],
                                                   stop: signal.Signals) -> None:
    """uvicorn re-raises the signal after its graceful shutdown; a supervisor (Kubernetes,
    systemd, a CI job) must not see a clean stop as status 143. With workers, the
    supervisor process is the one that exits."""
    with service_process(args=args) as running, httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 20
        while len({r["pid"] for r in running.log_records()  # every worker is serving
                   if r["event"] == "Application startup complete."}) < (2 if args else 1):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        answer = client.post(running.url + "/chat", json={"message": "hello"},
                             headers={"X-Request-ID": "before-stop"})
        assert answer.status_code == 200
        running.wait_for_log("request_end", request_id="before-stop")
        running.proc.send_signal(stop)
        status = running.proc.wait(timeout=30)
        assert running._reader is not None
        running._reader.join(timeout=5)  # every line the processes wrote
        stderr = running.proc.stderr.read() if running.proc.stderr else ""
        records = running.log_records()
    assert status == 0, stderr
    assert "Traceback" not in stderr
    serving = {r["pid"] for r in records if r["event"] == "http_access"}
    workers = {r["pid"] for r in records if r["event"] == "shutdown_complete"}
    assert serving <= workers and len(workers) == (2 if args else 1)
    for pid in workers:  # each server process's last line of its own
        own = [r for r in records if r["pid"] == pid and r["logger"].startswith("hello_ship.")]
        assert own[-1]["event"] == "shutdown_complete", own[-1]
        assert own[-1]["signal"] == ("SIGTERM" if args else stop.name)


def test_a_start_up_failure_still_exits_non_zero() -> None:
    """Stop signals exit 0; a server that cannot start does not."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, **FAST_DEMO, "PORT": "0",
               "METRICS_PORT": str(taken.getsockname()[1])}
        done = subprocess.run([sys.executable, "-m", "cli.main", "serve"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode not in (0, -signal.SIGTERM), done.stderr
    assert '"metrics_port_unavailable"' in done.stdout
