"""`hello-ship serve`: the service under uvicorn, with the flags and workers it was given."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    settings = load_settings_or_exit(os.environ)
    if args.workers > 1 and settings.metrics_port == 0:
        exit_with(SettingsError("METRICS_PORT", "0 (any free port) would give each worker "
                                                "its own; choose a port"))
    chosen = os.environ.get(MULTIPROC_DIR_VAR)
    if chosen and not (os.path.isdir(chosen) and os.access(chosen, os.W_OK)):
        exit_with(SettingsError(MULTIPROC_DIR_VAR, f"{chosen} is not a writable directory"))
    configure_logging(settings.log_level)
    with _shared_metrics_dir(args.workers):
        uvicorn.run(
            "app.main:app",
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_config=None,  # app.main configures JSON logging in every worker
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + 5,
        )
    return 0



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
