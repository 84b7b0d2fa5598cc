"""The service run inside another command (`hello-ship eval` without `--url`): a real uvicorn
server on a free loopback port, in a background thread, stopped when the command is done.

It reads the same environment as `hello-ship serve`, less what only a real listener needs:
it binds loopback whatever `HOST` says, so `HOST=0.0.0.0` must not stop it starting (open mode
refuses a public host), and `ALLOW_OPEN_MODE`, which serves anyone off loopback, must not take
away the loopback operator's right to pin routes. It serves no separate metrics port either.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import uvicorn

from app.connections import EdgeProtocol
from app.factory import create_app
from config.settings import Settings

START_TIMEOUT_S = 15.0
_LISTENER_ONLY = ("ALLOW_OPEN_MODE", "METRICS_PORT", "METRICS_HOST")


class ServiceDidNotStart(RuntimeError):
    """The in-process service did not start; its own log lines say why."""


def in_process_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` as the in-process service reads it: bound to loopback, its own port."""
    kept = {name: value for name, value in env.items() if name not in _LISTENER_ONLY}
    return {**kept, "HOST": "127.0.0.1", "PORT": "0"}


@contextmanager
def in_process_service(settings: Settings) -> Iterator[str]:
    """The base URL of the service serving `settings` until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), log_config=None, access_log=False, lifespan="on",
        http=EdgeProtocol.with_limits(settings.connections), proxy_headers=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise ServiceDidNotStart("the in-process service did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()
