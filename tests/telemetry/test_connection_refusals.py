"""The refusal log sums a flood up in one line every few seconds, and says the rest of a burst
when the time comes, not at some later refusal."""

from __future__ import annotations

import anyio
import pytest

from telemetry import connection_refusals
from telemetry.connection_refusals import RefusalLog
from tests.logcapture import captured_logs


async def test_a_burst_is_one_line_then_its_tail_when_the_time_comes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_refusals, "REFUSALS_LOG_EVERY_S", 0.2)
    log = RefusalLog()
    with captured_logs() as logs:
        for _ in range(1000):
            log.add("max_connections")
        log.add("idle")
        assert [r["reasons"] for r in logs.records("connections_refused")] == [
            {"max_connections": 1}]
        await anyio.sleep(0.4)
    assert [r["reasons"] for r in logs.records("connections_refused")] == [
        {"max_connections": 1}, {"max_connections": 999, "idle": 1}]
