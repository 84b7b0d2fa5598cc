"""Real servers for the tests: uvicorn in a thread, or `hello-ship serve` as a process.

Both bind 127.0.0.1 on a free port and are always stopped when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import orjson
import uvicorn
from starlette.types import ASGIApp

from app.connections import EdgeProtocol
from app.factory import create_app
from config.connections import ConnectionLimits
from config.settings import Settings
from providers.base import Provider

# Tests not about limits send more than the default 60 requests a minute of one tenant.
LOOSE_LIMITS = {"RPM_PER_TENANT": "1000000", "STREAMS_PER_TENANT": "100000",
                "DAILY_BUDGET_TOKENS": "1000000000000"}
FAST_PACING = {"DEMO_TTFT_MS": "20", "DEMO_TOKEN_DELAY_MS": "2"}
# A streamed answer whose reader leaves is cut at once, as with RESUME_GRACE_S=0; the tests of
# resuming give it a grace of their own.
NO_GRACE = {"RESUME_GRACE_S": "0"}
FAST_DEMO = {**FAST_PACING, **LOOSE_LIMITS, **NO_GRACE}


def settings_from(**env: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **env})


@dataclass
class ThreadServer:
    """uvicorn serving an app object on its own event loop in a background thread."""

    server: uvicorn.Server
    url: str
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    def run_in_loop(self, fn: Any) -> Any:
        """Run `fn()` on the server's loop and return its result (for task counts)."""
        assert self.loop is not None
        result: queue.Queue[Any] = queue.Queue()
        self.loop.call_soon_threadsafe(lambda: result.put(fn()))
        return result.get(timeout=5)


@contextmanager
def thread_server(app: ASGIApp, limits: ConnectionLimits | None = None) -> Iterator[ThreadServer]:
    """`limits`: serve with the service's own connection protocol, as `hello-ship serve`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    protocol = {"http": EdgeProtocol.with_limits(limits)} if limits is not None else {}
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, proxy_headers=False, **protocol)
    server = uvicorn.Server(config)
    live = ThreadServer(server, f"http://127.0.0.1:{port}", threading.Thread())

    def run() -> None:
        async def serve() -> None:
            live.loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])
        asyncio.run(serve())

    live.thread = threading.Thread(target=run, daemon=True)
    live.thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not live.thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield live
    finally:
        server.should_exit = True
        live.thread.join(timeout=10)
        sock.close()


@contextmanager
def app_server(settings: Settings | None = None,
               provider: Provider | None = None) -> Iterator[ThreadServer]:
    settings = settings or settings_from()
    with thread_server(create_app(settings, provider), settings.connections) as live:
        yield live


@dataclass
class ServiceProcess:
    """`hello-ship serve` in a child process, with its stdout collected line by line."""

    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def log_records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in list(self.lines)]

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        """With several workers the socket is bound before any worker listens on it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                address = urlparse(self.url)
                with socket.create_connection((address.hostname, address.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def wait_for_log_prefix(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                event = str(record.get("event", ""))
                if event.startswith(prefix):
                    return event
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"the service exited early: {stderr}")
            time.sleep(0.02)
        raise RuntimeError(f"the service did not log {prefix!r} within {timeout}s")

    def wait_for_log(self, event: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if record.get("event") == event and all(
                        record.get(k) == v for k, v in fields.items()):
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no {event!r} log line with {fields} within {timeout}s")


@contextmanager
def service_process(env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                    on_first_line: Callable[[subprocess.Popen[str]], None] | None = None,
                    ) -> Iterator[ServiceProcess]:
    """`on_first_line` runs when the process writes its first log line, while it starts."""
    full_env = {**os.environ, **FAST_DEMO, "PORT": "0", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", *args],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    service = ServiceProcess(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not service.lines and on_first_line is not None:
                on_first_line(proc)
            service.lines.append(line)

    service._reader = threading.Thread(target=read, daemon=True)
    service._reader.start()
    try:
        started = service.wait_for_log_prefix("Uvicorn running on ", timeout=20)
        service.url = started.split("running on ")[1].split(" ")[0]
        service.wait_until_serving()
        yield service
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        service._reader.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
