"""`hello-ship serve`: the service under uvicorn, with the flags and workers it was given."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from config.env import SettingsError
from config.settings import exit_with, load_settings_or_exit
from telemetry.exposition import MULTIPROC_DIR_VAR


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from telemetry.jsonlog import configure_logging

    # Flags override the environment; workers re-read it, so the overrides go there too.
    if args.host is not None:
        os.environ["HOST"] = args.host
    if args.port is not None:
        os.environ["PORT"] = str(args.port)
    # SIGHUP asks for a reload (app/reload.py), which the app takes over once it runs; until
    # then start-up is reading the files anyway, and the default action would end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = load_settings_or_exit(os.environ)
    if args.workers > 1 and settings.metrics_port == 0:
        exit_with(SettingsError("METRICS_PORT", "0 (any free port) would give each worker "
                                                "its own; choose a port"))
    chosen = os.environ.get(MULTIPROC_DIR_VAR)
    if chosen and not (os.path.isdir(chosen) and os.access(chosen, os.W_OK)):
        exit_with(SettingsError(MULTIPROC_DIR_VAR, f"{chosen} is not a writable directory"))
    configure_logging(settings.log_level)
    with _shared_metrics_dir(args.workers), _stop_signals_exit_cleanly():
        uvicorn.run(
            "app.main:app",
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_config=None,  # app.main configures JSON logging in every worker
            access_log=False,
            # Bounded connections (app/connections.py); forwarding headers are read by the
            # app itself (app/callers.py, TRUSTED_PROXIES), never by the server.
            http="app.connections:EdgeProtocol",
            proxy_headers=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + 5,
        )
    return 0


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextmanager
def _stop_signals_exit_cleanly() -> Iterator[None]:
    """A stop signal ends the process with status 0 once uvicorn has shut down cleanly.

    uvicorn's server handles SIGTERM and SIGINT itself while it runs (`app/lifecycle.py`
    drains around that) and, after a graceful shutdown, puts back the handlers it found and
    raises the signal again. With the default SIGTERM handler that re-raise killed the
    process after `shutdown_complete`, and a supervisor saw status 143 for a clean stop.
    uvicorn finds the handlers installed here instead, so the re-raised signal becomes
    `SystemExit(0)`, which unwinds the event loop and runs the exit handlers (the last log
    lines) as any clean exit does. A crash raises an exception and never reaches the re-raise,
    so it still exits non-zero. Under `--workers N` the supervisor process is the one that
    exits: it handles the signals itself and returns once its workers have stopped.
    """
    previous = {signum: signal.signal(signum, _exit_cleanly) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _shared_metrics_dir(workers: int) -> Iterator[None]:
    """Several workers write their metrics to files in one directory, so `/metrics` on any
    of them counts them all. The workers inherit the variable; values of an earlier run in a
    directory the operator chose are wiped, or they would be counted again."""
    chosen = os.environ.get(MULTIPROC_DIR_VAR)
    if chosen:
        for stale in Path(chosen).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield
        return
    if workers <= 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="hello-ship-metrics-")
    os.environ[MULTIPROC_DIR_VAR] = path
    try:
        yield
    finally:
        del os.environ[MULTIPROC_DIR_VAR]
        shutil.rmtree(path, ignore_errors=True)
