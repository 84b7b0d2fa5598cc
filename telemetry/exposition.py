"""The text `/metrics` serves: this process's registry, or every worker's under `--workers N`.

prometheus-client's multiprocess mode is on when `PROMETHEUS_MULTIPROC_DIR` is set (by
`hello-ship serve --workers N`, or by whoever runs several workers). Each worker then writes
its values to files in that directory, and any worker reading them all answers for the whole
server, so a scrape may land on any of them.
"""

from __future__ import annotations

import os

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


def worker_exiting() -> None:
    """Drop this worker's live gauges (active streams, breaker state) from the sums; its
    counters stay, so totals never go backwards when a worker is replaced."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
