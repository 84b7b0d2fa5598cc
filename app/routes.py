"""Thin handlers: validate at the edge, hand the work to the chat service."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from app.body import read_json_object
from app.callers import authorization, is_local
from app.errors import ApiError, JSONResponse, refusal_error
from app.guardrails import Guardrails
from app.lifecycle import Lifecycle
from app.request_metrics import CHAT_ENDPOINT, REACHED_PIPELINE
from app.responses import CollectedResponse, OnEnd
from app.schemas import ChatInput, InputLimits, parse_chat
from app.service import ChatService
from config.settings import Settings
from quota.ledger import NOTHING_SPENT
from streaming.chain import RouteChain
from streaming.pipeline import STREAMED, ChatJob, Endpoint
from streaming.readiness import RouteChecks
from streaming.record import StreamRecord
from telemetry import trace_context, tracing
from telemetry.spans import ChatSpan
from tenancy.admission import Bill, Gatekeeper
from tenancy.errors import TenancyRefusal
from tenancy.identity import ANONYMOUS, Identity


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    lifecycle: Lifecycle = request.app.state.lifecycle
    checks: RouteChecks = request.app.state.checks
    usable, reasons, routes = checks.report()
    if lifecycle.draining:
        reasons.insert(0, "draining")
    if lifecycle.draining or not usable:
        return JSONResponse({"status": "not_ready", "reasons": reasons, "routes": routes},
                            status_code=503)
    return JSONResponse({"status": "ready", "routes": routes})


def identify(request: Request) -> Identity:
    """Who sent the request, from its key; 401 (or 503 in open mode for a caller not on this
    host) if nobody."""
    gate: Gatekeeper = request.app.state.gate
    try:
        return gate.tenancy.identify(authorization(request.scope), is_local(request.scope),
                                     pinning="x-route" in request.headers)
    except TenancyRefusal as refusal:
        raise refusal_error(refusal) from None


def admin_target(request: Request, needs: str) -> str:
    """The tenant an admin endpoint names in its path: 401 without an admin key (`needs`
    says for what), 404 for a tenant not configured."""
    gate: Gatekeeper = request.app.state.gate
    if not gate.tenancy.is_admin(authorization(request.scope)):
        raise ApiError(401, "unauthorized", f"{needs} needs an admin key.",
                       headers={"WWW-Authenticate": "Bearer"})
    tenant: str = request.path_params["tenant"]
    known = gate.tenancy.policies if not gate.tenancy.open_mode else {ANONYMOUS: None}
    if tenant not in known:
        raise ApiError(404, "unknown_tenant", "No tenant of that name is configured.")
    return tenant


@dataclass(frozen=True, slots=True)
class Ask:
    """What a chat request's body asks for, whichever endpoint it came by."""

    chat: ChatInput
    endpoint: Endpoint
    model: str | None = None  # the `model` of OpenAI's body; None: the configured chain
    include_usage: bool = False


Parse = Callable[[dict[str, Any], InputLimits], Ask]
# The response to a request that reached the pipeline: how its frames leave.
Respond = Callable[[Request, Ask, Identity, ChatJob, OnEnd], Awaitable[ASGIApp]]


async def answer(request: Request, path: str, parse: Parse, respond: Respond,
                 stream: bool) -> ASGIApp:
    """One chat request, from its key to its response; `stream` as far as the path tells."""
    ctx = trace_context.current.get()
    assert ctx is not None, "EdgeMiddleware sets the request context"
    span, ctx = tracing.start_chat(ctx, path, stream)
    if span is None:
        return await _open(request, ctx, None, parse, respond)
    try:
        return await _open(request, ctx, span, parse, respond)
    except BaseException as exc:  # refused before the answer began: the span ends here
        span.refused(*_refused_status(exc))
        raise


def _refused_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code of a request that never reached a provider."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    if isinstance(exc, Exception):
        return 500, "internal_error"
    return 499, "cancelled"  # the client left or the server is stopping


async def _open(request: Request, ctx: trace_context.RequestContext, span: ChatSpan | None,
                parse: Parse, respond: Respond) -> ASGIApp:
    service: ChatService = request.app.state.service
    gate: Gatekeeper = request.app.state.gate
    guardrails: Guardrails = request.app.state.guardrails
    identity = identify(request)
    pinned = _pinned_chain(request, service, gate, identity)
    settings = service.settings
    payload = await read_json_object(request, settings.max_body_bytes,
                                     settings.connections.body_timeout_s)
    ask = parse(payload, service.input_limits(identity))
    setattr(request.state, CHAT_ENDPOINT, ask.endpoint)
    if span is not None:
        span.streaming(ask.endpoint in STREAMED)
    chain = pinned or _model_chain(service, identity, ask.model)
    chat = ask.chat
    try:
        admitted = await gate.admit(identity, service.prompt(chat), chat.max_tokens)
    except TenancyRefusal as refusal:
        raise refusal_error(refusal) from None
    try:
        # After admission, so refused requests still count against the caller's rate limit.
        chat = await guardrails.check_input(chat, identity.tenant)
    except BaseException:
        await gate.settle(admitted, NOTHING_SPENT)
        raise
    prompt = service.prompt(chat)  # what the provider is sent, redactions included

    charged: list[Bill] = []  # the one bill, made when the answer ends

    async def settle(record: StreamRecord) -> None:
        if not charged:
            charged.append(gate.bill(record, prompt))
        await gate.settle(admitted, charged[0].spend)  # settles once; later calls do nothing

    stream = ask.endpoint in STREAMED
    try:
        job = service.start(chat, identity, ctx, endpoint=ask.endpoint, on_terminal=settle,
                            chain=chain, pinned=pinned is not None,
                            stream_id=new_stream_id() if ask.endpoint == "stream" else None)
    except BaseException:
        await gate.settle(admitted, NOTHING_SPENT)
        raise
    setattr(request.state, REACHED_PIPELINE, True)  # counted when it ends, not as refused

    async def on_end(http_status: int) -> None:
        # A client that left before the end skipped `on_terminal`: settle here instead. The
        # log line carries the bill that was charged.
        try:
            await settle(job.record)
            service.finish(chat, identity, job, charged[0], stream=stream,
                           http_status=http_status)
        finally:
            if span is not None:
                span.end(job.record, http_status)

    return await respond(request, ask, identity, job, on_end)


def _model_chain(service: ChatService, identity: Identity, model: str | None) -> RouteChain:
    """The routes that may answer the `model` asked for (the chain if none was), as far as
    the caller's tenant may use them; 404 `model_not_found` otherwise."""
    catalog = service.models
    listed = service.settings.tenancy.policy(identity.tenant).models
    if model is None:
        permitted = catalog.permitted(listed)
        if not permitted:  # its models name none of these routes: never the whole chain
            raise ApiError(403, "model_not_permitted", "This key may use none of the service's "
                                                       "routes.")
        return service.chain.narrowed(permitted)
    if not catalog.allowed(model, listed):  # the name is not repeated: it is caller input
        raise ApiError(404, "model_not_found", "That model does not exist or this key may not "
                                               "use it; GET /v1/models lists those it may.",
                       param="model")
    return service.chain.narrowed(catalog.routes_for(model, listed))


def _pinned_chain(request: Request, service: ChatService, gate: Gatekeeper,
                  identity: Identity) -> RouteChain | None:
    """The one route an operator pinned with `X-Route`, if any."""
    route = request.headers.get("x-route")
    if route is None:
        return None
    if not gate.tenancy.may_pin_routes(identity):
        raise ApiError(403, "route_pin_forbidden", "Choosing a route (X-Route) takes an admin "
                                                   "key.")
    pinned = service.chain.pinned(route)
    if pinned is None:  # the name is not repeated: it is caller input
        raise ApiError(400, "unknown_route", "X-Route names no route of this service; "
                                             "GET /ready lists them.")
    if pinned.links[0].disabled:
        raise ApiError(503, "route_disabled", "That route is disabled by the operator "
                                              "(DISABLED_ROUTES).")
    return pinned


def _parse_chat(payload: dict[str, Any], limits: InputLimits) -> Ask:
    return Ask(parse_chat(payload, limits), "chat")


async def _collected(request: Request, ask: Ask, identity: Identity, job: ChatJob,
                     on_end: OnEnd) -> ASGIApp:
    settings: Settings = request.app.state.service.settings
    return CollectedResponse(job, settings, request.app.state.lifecycle.stopping, on_end)


def new_stream_id() -> str:
    return "str_" + secrets.token_hex(12)


async def chat(request: Request) -> ASGIApp:
    return await answer(request, "/chat", _parse_chat, _collected, stream=False)
