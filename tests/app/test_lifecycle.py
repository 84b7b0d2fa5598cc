from __future__ import annotations

import signal
from collections.abc import Iterator

import anyio
import pytest
from sse_starlette.sse import AppStatus

from app.lifecycle import Lifecycle
from telemetry import trace_context
from tests.logcapture import captured_logs


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """Stands in for the handler uvicorn installs; records what reached it."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
        AppStatus.should_exit = False  # process-wide: never leak it into other tests


async def test_sigterm_drains_then_stops_outside_any_request(server_handler: list[int]) -> None:
    lifecycle = Lifecycle(drain_delay_s=0.2)
    restore = lifecycle.install()
    with captured_logs() as logs:
        # the signal lands while a request's task runs: its context must not leak into the log
        token = trace_context.current.set(trace_context.RequestContext("req_busy", None, 0.0))
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            trace_context.current.reset(token)
        await anyio.sleep(0.05)
        assert lifecycle.draining and server_handler == []  # still serving during the delay
        assert lifecycle.stopping is not None and not lifecycle.stopping.is_set()
        with anyio.fail_after(2):
            await lifecycle.stopping.wait()
    restore()
    assert server_handler == [signal.SIGTERM]
    assert AppStatus.should_exit  # sse-starlette's backstop is told as well
    (drain,) = logs.records("drain_started")
    assert "request_id" not in drain and drain["signal"] == "SIGTERM"


async def test_a_second_sigterm_skips_the_delay(server_handler: list[int]) -> None:
    lifecycle = Lifecycle(drain_delay_s=30)
    restore = lifecycle.install()
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    assert lifecycle.stopping is not None
    with anyio.fail_after(2):
        await lifecycle.stopping.wait()
    restore()
    assert server_handler == [signal.SIGTERM]
