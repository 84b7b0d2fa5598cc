"""A client that leaves cancels the upstream call at once, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Callable
from urllib.parse import urlparse

import httpx
import orjson

from streaming.pipeline import ChatJob
from tests.fakes import ScriptedProvider, words
from tests.servers import ThreadServer, app_server


def endless_provider() -> ScriptedProvider:
    # Sentences, so the output guard releases text within a few tokens.
    return ScriptedProvider(words("Tokens keep coming. " * 2000, delay=0.005))


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
    return time.monotonic() - started


def open_and_drop(live: ThreadServer, path: str, wait_for: bytes = b"",
                  until: Callable[[], bool] | None = None) -> None:
    """Send a chat request on a raw socket; hang up once `wait_for` was read and `until()`."""
    address = urlparse(live.url)
    body = orjson.dumps({"message": "please stream"})
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (path.encode(), len(body), body))
        seen = b""
        while wait_for not in seen:
            seen += sock.recv(4096)
        if until is not None:
            wait_until(until)


def test_leaving_mid_stream_cancels_the_provider_promptly() -> None:
    provider = endless_provider()
    with app_server(provider=provider) as live, httpx.Client(timeout=10) as client:
        with client.stream("POST", live.url + "/chat/stream", json={"message": "go"}) as response:
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    break
        waited = wait_until(lambda: provider.closed_early == 1)
        assert waited < 1.0
        assert provider.finished == 0
        assert client.get(live.url + "/health").status_code == 200


def test_leaving_a_non_streaming_chat_cancels_the_provider_too() -> None:
    provider = endless_provider()
    with app_server(provider=provider) as live:
        # /chat sends nothing until the answer is complete: hang up once the model is working
        open_and_drop(live, "/chat", until=lambda: provider.started == 1)
        wait_until(lambda: provider.closed_early == 1)
        assert provider.finished == 0


def live_tasks(live: ThreadServer) -> int:
    return int(live.run_in_loop(lambda: len(asyncio.all_tasks())))


def live_jobs() -> int:
    gc.collect()
    return sum(isinstance(obj, ChatJob) for obj in gc.get_objects())


def test_many_disconnects_leave_no_task_or_job_behind() -> None:
    provider = endless_provider()
    with app_server(provider=provider) as live:
        open_and_drop(live, "/chat/stream", b"event: token")  # warm up lazily created state
        wait_until(lambda: provider.open_streams == 0)
        baseline_tasks, baseline_jobs = live_tasks(live), live_jobs()
        for _ in range(150):
            open_and_drop(live, "/chat/stream", b"event: token")
        wait_until(lambda: provider.open_streams == 0, timeout=10)
        wait_until(lambda: live_tasks(live) <= baseline_tasks, timeout=5)
        assert provider.closed_early == 151
        assert live_jobs() <= baseline_jobs
