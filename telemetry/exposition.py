"""The text `/metrics` serves: this process's registry, or every worker's under `--workers N`.

prometheus-client's multiprocess mode is on when `PROMETHEUS_MULTIPROC_DIR` is set (by
`hello-ship serve --workers N`, or by whoever runs several workers). Each worker then writes
its values to files in that directory, and any worker reading them all answers for the whole
server, so a scrape may land on any of them.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import IO

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VAR) or None


def scrape_registry() -> CollectorRegistry:
    """The registry a scrape reads: all workers' files in multiprocess mode."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def render() -> bytes:
    return generate_latest(scrape_registry())


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that died without `worker_exiting` (killed, out of
    memory): a replacement worker runs this as it starts, so an in-flight count or an open
    breaker of a dead worker does not stay in the sums."""
    directory = multiprocess_dir()
    if directory is None:
        return
    for path in Path(directory).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is not None and not _alive(int(match[1])):
            multiprocess.mark_process_dead(int(match[1]))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


_listener_lock: IO[bytes] | None = None


def claim_listener() -> bool:
    """Whether this process may serve the metrics port. One process alone may; among
    several workers, the one holding a lock in the shared directory, held while the worker
    lives (the system drops it when the worker dies, and its replacement takes it)."""
    global _listener_lock
    directory = multiprocess_dir()
    if directory is None or _listener_lock is not None:
        return True
    lock = open(Path(directory) / "metrics-listener.lock", "ab")  # noqa: SIM115 -- held
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    _listener_lock = lock
    return True


def release_listener() -> None:
    global _listener_lock
    if _listener_lock is not None:
        _listener_lock.close()
        _listener_lock = None


def worker_exiting() -> None:
    """Drop this worker's live gauges (active streams, breaker state) from the sums; its
    counters stay, so totals never go backwards when a worker is replaced."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
