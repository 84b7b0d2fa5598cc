"""Draining on SIGTERM: keep serving but report not ready, then let the server shut down.

Load balancers and Kubernetes keep sending traffic for a few seconds after they signal a pod
to stop. During `drain_delay_s` after the first SIGTERM the service answers everything as usual
except `/ready`, which says 503, so the balancer takes it out of rotation before the listener
closes. Then uvicorn's own shutdown runs: open streams get `SHUTDOWN_GRACE_S` to finish.

The handler wraps the one uvicorn installed for the lifetime of the server (it restores its
own original afterwards), so this works under `hello-ship serve`, `--workers N` and plain
`uvicorn app.main:app`. A second SIGTERM skips the rest of the delay.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("hello_ship.lifecycle")

SignalHandler = Callable[[int, FrameType | None], Any]


class Lifecycle:
    def __init__(self, drain_delay_s: float) -> None:
        self.drain_delay_s = drain_delay_s
        self.draining = False

    def install(self) -> Callable[[], None]:
        """Wrap the current SIGTERM handler; returns a function that puts it back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signals reach only the main thread (embedded servers)
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            return lambda: None
        loop = asyncio.get_running_loop()

        def drain_then_stop(signum: int, frame: FrameType | None) -> None:
            if self.draining or self.drain_delay_s <= 0:
                self._start_draining()
                server_handler(signum, frame)
                return
            self._start_draining()
            loop.call_soon_threadsafe(loop.call_later, self.drain_delay_s, server_handler,
                                      signum, frame)

        def restore() -> None:
            signal.signal(signal.SIGTERM, server_handler)

        signal.signal(signal.SIGTERM, drain_then_stop)
        return restore

    def _start_draining(self) -> None:
        if not self.draining:
            self.draining = True
            logger.info("drain_started", extra={"drain_delay_s": self.drain_delay_s})
