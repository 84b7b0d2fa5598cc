"""`GET /metrics`, and the separate metrics port, so the numbers are not public by accident.

On the service port the endpoint takes an admin key or a scrape-only `[metrics]` key when
keys are configured (in open mode, loopback only, it is open like everything else). With
`METRICS_PORT` set it moves to its own listener on `METRICS_HOST` (127.0.0.1 unless told
otherwise) and the service port answers 404, so only the network that can reach that port
can scrape. Under several workers one of them holds the port; if it dies, its replacement
takes the port over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio.to_thread
from prometheus_client import start_http_server
from starlette.requests import Request
from starlette.responses import Response

from app.errors import ApiError
from app.settings import Settings
from app.tenants import Tenancy
from telemetry import exposition

logger = logging.getLogger("hello_ship.metrics")


async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.service.settings
    if settings.metrics_port is not None:
        raise ApiError(404, "not_found", "Metrics are served on the metrics port "
                                         "(METRICS_PORT), not here.")
    tenancy: Tenancy = settings.tenancy
    if not tenancy.open_mode and not tenancy.may_scrape(request.headers.get("authorization")):
        raise ApiError(401, "unauthorized", "Scraping takes an admin key or a [metrics] key "
                                            "as 'Authorization: Bearer <key>'.",
                       headers={"WWW-Authenticate": "Bearer"})
    # Off the event loop: reading many workers' files takes milliseconds that streams feel.
    body = await anyio.to_thread.run_sync(exposition.render)
    return Response(body, media_type=exposition.CONTENT_TYPE)


def start_metrics_listener(settings: Settings) -> Callable[[], None] | None:
    """Serve `/metrics` on `METRICS_PORT` from a thread; returns how to stop it.

    Under several workers one of them serves the port (each worker's answer covers them
    all): the others leave it, and take over when it dies. Failing to bind is fatal.
    """
    if settings.metrics_port is None:
        return None
    if not exposition.claim_listener():
        logger.info("metrics_listener_elsewhere", extra={"port": settings.metrics_port})
        return None
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_host,
                                           registry=exposition.scrape_registry())
    except OSError as exc:
        exposition.release_listener()
        logger.error("metrics_port_unavailable", extra={
            "host": settings.metrics_host, "port": settings.metrics_port,
            "error_class": type(exc).__name__, "errno": exc.errno})
        raise
    logger.info("metrics_listening", extra={"host": settings.metrics_host,
                                            "port": server.server_port})

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        exposition.release_listener()

    return stop
