"""The usage read-outs over HTTP (the figures are tenancy.usage's).

`GET /usage` answers for the caller's own tenant; `GET /admin/usage/{tenant}` for any tenant,
with an admin key. A tenant key can never read another tenant's numbers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.errors import ApiError, JSONResponse
from app.routes import admin_target, identify
from quota.days import recent_days
from quota.ledger import StoreUnavailable
from tenancy.admission import Gatekeeper
from tenancy.usage import usage_report

DEFAULT_DAYS = 7


async def own_usage(request: Request) -> Response:
    gate: Gatekeeper = request.app.state.gate
    identity = identify(request)
    return await _report(request, gate, identity.tenant)


async def tenant_usage(request: Request) -> Response:
    gate: Gatekeeper = request.app.state.gate
    return await _report(request, gate, admin_target(request, "This read-out"))


async def _report(request: Request, gate: Gatekeeper, tenant: str) -> Response:
    days = _days_param(request.query_params.get("days"), gate.retention_days)
    now = gate.now()
    try:
        history = await gate.store.usage(tenant, recent_days(now, days))
    except StoreUnavailable:
        raise ApiError(503, "limits_unavailable", "Usage cannot be read right now.",
                       headers={"Retry-After": "5"}) from None
    return JSONResponse(usage_report(tenant, gate.tenancy.policy(tenant).limits, history, now))


def _days_param(raw: str | None, most: int) -> int:
    if raw is None:
        return min(DEFAULT_DAYS, most)
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiError(422, "invalid_request", f"'days' must be a whole number from 1 to {most}.")
    return int(raw)
