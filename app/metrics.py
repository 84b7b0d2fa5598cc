"""`GET /metrics` on the service port, so the numbers are not public by accident.

The endpoint takes an admin key or a scrape-only `[metrics]` key when keys are configured (in
open mode it is open like everything else, to local callers only: app.callers). With
`METRICS_PORT` set the numbers move to their own listener (telemetry.metrics_port) and this
endpoint answers 404.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from app.callers import authorization
from app.errors import ApiError
from app.routes import identify
from config.settings import Settings
from telemetry import exposition
from tenancy.identity import Tenancy


async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.service.settings
    if settings.metrics_port is not None:
        raise ApiError(404, "not_found", "Metrics are served on the metrics port "
                                         "(METRICS_PORT), not here.")
    tenancy: Tenancy = settings.tenancy
    if tenancy.open_mode:
        identify(request)  # the same rule as chat: local callers only
    elif not tenancy.may_scrape(authorization(request.scope)):
        raise ApiError(401, "unauthorized", "Scraping takes an admin key or a [metrics] key "
                                            "as 'Authorization: Bearer <key>'.",
                       headers={"WWW-Authenticate": "Bearer"})
    # Off the event loop: reading many workers' files takes milliseconds that streams feel.
    body = await anyio.to_thread.run_sync(exposition.render)
    return Response(body, media_type=exposition.CONTENT_TYPE)
