"""Draining and stopping on SIGTERM (and SIGINT).

Load balancers and Kubernetes keep sending traffic for a few seconds after they signal a pod
to stop. For `drain_delay_s` after the first SIGTERM the service answers everything as usual
except `/ready`, which says 503, so the balancer takes it out of rotation before the listener
closes. Then the server stops: `stopping` is set, which gives every open answer, streamed or
not, `SHUTDOWN_GRACE_S` to finish before it is cut with a `shutting_down` error, and uvicorn
closes the listener and waits for the connections. SIGINT (Ctrl-C) and a second SIGTERM skip
the delay.

The handlers wrap the ones uvicorn installs for the lifetime of the server (uvicorn restores
its own originals afterwards), so this works under `hello-ship serve`, `--workers N` and plain
`uvicorn app.main:app`. A server stopped without a signal (embedded in tests) skips all this.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio
from sse_starlette.sse import AppStatus

logger = logging.getLogger("hello_ship.lifecycle")

SignalHandler = Callable[[int, FrameType | None], Any]
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    def __init__(self, drain_delay_s: float, shutdown_grace_s: float = 0.0) -> None:
        self.drain_delay_s = drain_delay_s
        self.shutdown_grace_s = shutdown_grace_s  # logged only: the pipeline enforces it
        self.draining = False
        self.stop_signal: str | None = None  # the signal that began the shutdown, if any
        self.stopping: anyio.Event | None = None

    def install(self) -> Callable[[], None]:
        """Wrap the server's signal handlers; returns a function that puts them back.

        Runs inside the event loop (the app's lifespan), which owns `stopping`.
        """
        self.stopping = anyio.Event()
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signals reach only the main thread (embedded servers)
        loop = asyncio.get_running_loop()
        originals: dict[int, Any] = {}
        for signum in _SIGNALS:
            server_handler = signal.getsignal(signum)
            if callable(server_handler):
                originals[signum] = server_handler
                signal.signal(signum, self._wrap(loop, server_handler))

        def restore() -> None:
            for signum, handler in originals.items():
                signal.signal(signum, handler)

        return restore

    def _wrap(self, loop: asyncio.AbstractEventLoop,
              server_handler: SignalHandler) -> SignalHandler:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            # A signal handler interrupts whatever runs, maybe a request's task or the loop's
            # own bookkeeping: hand over to the loop, in a context of no request.
            loop.call_soon_threadsafe(self._begin, loop, server_handler, signum, frame,
                                      context=contextvars.Context())

        return on_signal

    def _begin(self, loop: asyncio.AbstractEventLoop, server_handler: SignalHandler,
               signum: int, frame: FrameType | None) -> None:
        first = not self.draining
        if first:
            self.draining = True
            self.stop_signal = signal.Signals(signum).name
            logger.info("drain_started", extra={"signal": signal.Signals(signum).name,
                                                "drain_delay_s": self.drain_delay_s})
        delay = self.drain_delay_s if first and signum == signal.SIGTERM else 0.0
        loop.call_later(delay, self._stop, server_handler, signum, frame)

    def _stop(self, server_handler: SignalHandler, signum: int, frame: FrameType | None) -> None:
        if self.stopping is not None:
            if not self.stopping.is_set():
                logger.info("shutdown_started", extra={"signal": signal.Signals(signum).name,
                                                       "grace_s": self.shutdown_grace_s})
            self.stopping.set()
        # sse-starlette watches for shutdown to end streams that outlive the grace; it cannot
        # recognise the server behind our handler, so tell it directly.
        AppStatus.should_exit = True
        server_handler(signum, frame)

    def log_complete(self) -> None:
        """The process's last line of its own: a log that ends without it ended in a crash
        or a kill, not a shutdown."""
        logger.info("shutdown_complete", extra={"signal": self.stop_signal})
