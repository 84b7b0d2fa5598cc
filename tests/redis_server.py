"""A real redis-server for the tests, on a free loopback port, always stopped afterwards.

`make test` installs redis-server when it is missing. Without it the Redis tests skip on a
developer machine and fail under CI=true, where a skip would hide that they never ran.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.programs import required_tool


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def redis_binary() -> str:
    return required_tool("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(port: int | None = None) -> Iterator[RedisServer]:
    """Start redis-server (no persistence); `port` to restart one on the same address."""
    binary = redis_binary()
    port = port or _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = RedisServer(proc, port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"redis-server did not start: {stderr}")
            time.sleep(0.02)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_env(shared_redis: RedisServer) -> dict[str, str]:
    """Settings for one test on the shared server, under a key prefix of its own."""
    return {"REDIS_URL": shared_redis.url, "REDIS_KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}
