"""Prometheus metrics, served at `/metrics`.

Labels are small closed sets (limit names, operations, policies): never a tenant id, a key or
anything from a request.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from starlette.requests import Request
from starlette.responses import Response

QUOTA_REFUSALS = Counter(
    "hello_ship_quota_refusals_total",
    "Chat requests refused by a tenant's rate limit, stream limit or budget.",
    ["limit"],
)
QUOTA_STORE_ERRORS = Counter(
    "hello_ship_quota_store_errors_total",
    "Calls to the quota store (Redis) that failed, and the policy applied.",
    ["operation", "policy"],
)

GUARD_HITS = Counter(
    "hello_ship_guardrail_hits_total",
    "Guardrail findings by direction (input, output), detector (email, api_key, "
    "blocked_pattern_0, moderation, ...) and the action taken.",
    ["direction", "detector", "action"],
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
