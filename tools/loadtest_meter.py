"""The load tester watching itself: a client short of CPU reads frames late and reports the
lateness as the target's TTFT, so each level says how busy the client was and warns when its
figures cannot be trusted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tools.loadtest_stats import Distribution

TICK_S = 0.01
BUSY_CPU_SHARE = 0.8  # of one core: above it, reads queue behind the client's own work
BUSY_LAG_S = 0.01  # the client's event loop this late (p99) delays every timestamp it takes
MIN_JUDGED_S = 1.0  # a shorter level's CPU share is mostly its start-up: not judged


@dataclass(frozen=True)
class ClientLoad:
    cpu_share: float  # CPU seconds per wall second (1.0 is one core)
    loop_lag: Distribution | None  # how late the event loop woke for a timer
    wall_s: float = MIN_JUDGED_S

    @property
    def busy(self) -> bool:
        if self.wall_s < MIN_JUDGED_S:
            return False
        lag = self.loop_lag.p99 if self.loop_lag is not None else 0.0
        return self.cpu_share >= BUSY_CPU_SHARE or lag >= BUSY_LAG_S

    def warning(self) -> str | None:
        if not self.busy:
            return None
        lag = self.loop_lag.p99 * 1000 if self.loop_lag is not None else 0.0
        return (f"the client itself was busy (CPU {self.cpu_share:.0%} of a core, event loop "
                f"late by {lag:.1f} ms at p99): its TTFT and ITL figures include its own "
                "delay; split the load over several load testers (each its own process) or "
                "give this one a faster core")

    def to_json(self) -> dict[str, object]:
        lag = self.loop_lag
        return {"cpu_share": self.cpu_share, "busy": self.busy,
                "loop_lag_ms": None if lag is None else lag.scaled(1000.0)}


class ClientMeter:
    """Counts the process's CPU time and samples the event loop's lateness while it runs."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        self._lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self._lags.append(max(time.perf_counter() - asked - TICK_S, 0.0))

    def stop(self) -> ClientLoad:
        if self._task is not None:
            self._task.cancel()
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        return ClientLoad(cpu / wall if wall > 0 else 0.0, Distribution.of(self._lags), wall)
