"""`DELETE /admin/cache/{tenant}`: forget a tenant's cached answers, with an admin key.

For a wrong answer that got cached, or content that changed under it: every replica stops
serving the tenant's entries at once (with Redis they are deleted there; a replica's index
entries left pointing at them find nothing and are dropped).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.errors import ApiError, JSONResponse
from app.routes import admin_target
from cache.answers import AnswerCache
from cache.store import StoreError


async def clear_tenant_cache(request: Request) -> Response:
    cache: AnswerCache = request.app.state.service.cache
    tenant = admin_target(request, "Clearing a cache")
    try:
        cleared = await cache.clear(tenant)
    except StoreError:
        raise ApiError(503, "cache_unavailable", "The cache store cannot be reached; nothing "
                                                 "was cleared. Try again shortly.",
                       headers={"Retry-After": "5"}, retryable=True) from None
    return JSONResponse({"tenant": tenant, "cleared": cleared})
