"""`/metrics` on a port of its own (`METRICS_PORT`), so the numbers are not public by accident.

It listens on `METRICS_HOST` (127.0.0.1 unless told otherwise), so only the network that can
reach that port can scrape. Under several workers one of them holds the port; if it dies,
its replacement takes the port over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import start_http_server

from telemetry import exposition

logger = logging.getLogger("hello_ship.metrics")


def start_metrics_listener(port: int | None, host: str) -> Callable[[], None] | None:
    """Serve `/metrics` on `METRICS_PORT` from a thread; returns how to stop it.

    Under several workers one of them serves the port (each worker's answer covers them
    all): the others leave it, and take over when it dies. Failing to bind is fatal.
    """
    if port is None:
        return None
    if not exposition.claim_listener():
        logger.info("metrics_listener_elsewhere", extra={"port": port})
        return None
    try:
        server, thread = start_http_server(port, host, registry=exposition.scrape_registry())
    except OSError as exc:
        exposition.release_listener()
        logger.error("metrics_port_unavailable", extra={
            "host": host, "port": port, "error_class": type(exc).__name__, "errno": exc.errno})
        raise
    logger.info("metrics_listening", extra={"host": host, "port": server.server_port})

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        exposition.release_listener()

    return stop
