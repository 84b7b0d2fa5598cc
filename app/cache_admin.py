"""`DELETE /admin/cache/{tenant}`: forget a tenant's cached answers, with an admin key.

For a wrong answer that got cached, or content that changed under it: every replica stops
serving the tenant's entries at once (with Redis they are deleted there; a replica's index
entries left pointing at them find nothing and are dropped).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.callers import authorization
from app.errors import ApiError, JSONResponse
from cache.answers import AnswerCache
from cache.store import StoreError
from tenancy.admission import Gatekeeper
from tenancy.identity import ANONYMOUS


async def clear_tenant_cache(request: Request) -> Response:
    gate: Gatekeeper = request.app.state.gate
    cache: AnswerCache = request.app.state.service.cache
    if not gate.tenancy.is_admin(authorization(request.scope)):
        raise ApiError(401, "unauthorized", "Clearing a cache needs an admin key.",
                       headers={"WWW-Authenticate": "Bearer"})
    tenant = request.path_params["tenant"]
    known = gate.tenancy.policies if not gate.tenancy.open_mode else {ANONYMOUS: None}
    if tenant not in known:
        raise ApiError(404, "unknown_tenant", "No tenant of that name is configured.")
    try:
        cleared = await cache.clear(tenant)
    except StoreError:
        raise ApiError(503, "cache_unavailable", "The cache store cannot be reached; nothing "
                                                 "was cleared. Try again shortly.",
                       headers={"Retry-After": "5"}, retryable=True) from None
    return JSONResponse({"tenant": tenant, "cleared": cleared})
