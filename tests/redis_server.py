"""A real redis-server for the tests, on a free loopback port, always stopped afterwards.

`make test` installs redis-server when it is missing. Without it the Redis tests skip on a
developer machine and fail under CI=true, where a skip would hide that they never ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.programs import required_tool, stop


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
        stop(proc)


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_env(shared_redis: RedisServer) -> dict[str, str]:
    """Settings for one test on the shared server, under a key prefix of its own."""
    return {"REDIS_URL": shared_redis.url, "REDIS_KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}


def _resp_command(buffer: bytearray) -> list[bytes] | None:
    """Take one whole command (a RESP array of bulk strings, or an inline command) off the
    front of `buffer`, or None while it is incomplete."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    if not buffer.startswith(b"*"):
        line = bytes(buffer[:end])
        del buffer[:end + 2]
        return line.split()
    count, at, args = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(buffer[at + 1:end])
        start = end + 2
        if len(buffer) < start + size + 2:
            return None
        args.append(bytes(buffer[start:start + size]))
        at = start + size + 2
    del buffer[:at]
    return args


class RedisProxy:
    """A TCP proxy on 127.0.0.1 between a Redis client and a redis-server, on an event loop
    of its own (a thread): it forwards every byte both ways, and can hold back the reply to
    one Lua script's calls (EVALSHA or EVAL) for a while. The server has run the script; its
    answer comes too late. Made for clients that wait for each reply before the next command
    on a connection (no pipelining of the held script)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="redis-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: tuple[frozenset[bytes], float] = (frozenset(), 0.0)
        self.replies_held = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold_script_replies(self, script: str, seconds: float) -> None:
        """From now on, the reply to each call of `script` reaches the client `seconds` late."""
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest().encode()
        self._held = (frozenset({sha, script.encode()}), seconds)

    def answer_promptly(self) -> None:
        self._held = (frozenset(), 0.0)

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self._upstream_port)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        delays: deque[float] = deque()  # one per held call sent, for its reply
        try:
            await asyncio.gather(self._requests(client_reader, server_writer, delays),
                                 self._replies(server_reader, client_writer, delays))
        except asyncio.CancelledError:
            pass  # stopped; a cancelled handler would make asyncio's streams log an error
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            self._tasks.discard(task)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        delays: deque[float]) -> None:
        pending = bytearray()
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                # Before the next await: no reply can be read before its delay is queued.
                pending += chunk
                while (command := _resp_command(pending)) is not None:
                    markers, seconds = self._held
                    if (seconds and len(command) > 1
                            and command[0].upper() in (b"EVALSHA", b"EVAL")
                            and command[1] in markers):
                        delays.append(seconds)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()  # the client left: so does its server connection

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       delays: deque[float]) -> None:
        try:
            while chunk := await reader.read(65536):
                if delays:
                    self.replies_held += 1
                    await asyncio.sleep(delays.popleft())
                if writer.is_closing():
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@contextmanager
def redis_proxy(server: RedisServer) -> Iterator[RedisProxy]:
    """A `RedisProxy` in front of `server`, stopped afterwards with all its connections."""
    proxy = RedisProxy(server.port)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()
