"""Streamed answers a reader can leave and come back to, and browsers can open.

`POST /chat/stream` answers with the frames at once; `POST /chat/streams` (for EventSource,
which can only GET and cannot send a key) starts the answer and hands back a URL with a
stream token. `GET /chat/streams/{id}` follows an answer from the frame after `Last-Event-ID`
(or `?last_event_id=`), with that token or the tenant's key; `DELETE` stops it.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from app.callers import authorization
from app.errors import ApiError, JSONResponse, refusal_error
from app.responses import OnEnd, ReaderResponse, log_client_gone
from app.routes import Ask, answer, identify
from app.schemas import InputLimits, parse_chat
from config.settings import Settings
from streaming.pipeline import ChatJob
from streaming.record import StreamRecord
from streaming.resumable import Answers, Cut, expired_frame
from telemetry import trace_context
from tenancy.errors import StreamTokenRefused, TenancyRefusal
from tenancy.identity import Identity
from tenancy.stream_tokens import StreamTokens

_STREAM_ID = re.compile(r"str_[0-9a-f]{24}")
_FRAME_ID = re.compile(r"-1|[0-9]{1,12}")
# What `client_disconnected` says of an answer cut for want of a reader.
CUT_REASONS: dict[Cut, str] = {"stopped": "stopped", "abandoned": "closed"}


def _parse(payload: dict[str, Any], limits: InputLimits) -> Ask:
    return Ask(parse_chat(payload, limits), "stream")


def _log_cut(record: StreamRecord, cut: Cut) -> None:
    stalled = cut == "abandoned" and record.outcome == "client_stalled"
    log_client_gone(record, "/chat/stream", "stalled" if stalled else CUT_REASONS[cut])


async def _start(request: Request, identity: Identity, job: ChatJob, on_end: OnEnd) -> str:
    answers: Answers = request.app.state.answers
    settings: Settings = request.app.state.service.settings
    assert job.stream_id is not None, "a streamed job is resumable"
    try:
        await answers.start(job.stream_id, identity.tenant, job, on_end, _log_cut,
                            request.app.state.lifecycle.stopping, settings.shutdown_grace_s)
    except BaseException:
        await on_end(500)  # it never ran: the request is over here
        raise
    return job.stream_id


async def _read_now(request: Request, ask: Ask, identity: Identity, job: ChatJob,
                    on_end: OnEnd) -> ASGIApp:
    stream_id = await _start(request, identity, job, on_end)
    return ReaderResponse(request.app.state.answers, stream_id, -1,
                          request.app.state.service.settings, job.request_id)


async def _hand_out(request: Request, ask: Ask, identity: Identity, job: ChatJob,
                    on_end: OnEnd) -> ASGIApp:
    stream_id = await _start(request, identity, job, on_end)
    tokens: StreamTokens = request.app.state.stream_tokens
    return JSONResponse({
        "stream_id": stream_id,
        "stream_url": f"/chat/streams/{stream_id}?token={tokens.issue(stream_id, identity.tenant)}",
        "expires_in": int(tokens.ttl_s),
    }, status_code=201)


async def chat_stream(request: Request) -> ASGIApp:
    return await answer(request, "/chat/stream", _parse, _read_now, stream=True)


async def create_stream(request: Request) -> ASGIApp:
    return await answer(request, "/chat/streams", _parse, _hand_out, stream=True)


def _last_event_id(request: Request) -> int:
    """The last frame the reader has: `Last-Event-ID` (EventSource sends it when it
    reconnects), else `?last_event_id=`; -1 for none."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return -1
    if not _FRAME_ID.fullmatch(raw.strip()):
        raise ApiError(400, "invalid_request", "Last-Event-ID must be a frame id (an integer).")
    return int(raw)


async def _tenant_for(request: Request, stream_id: str, starting: bool) -> str:
    """The tenant the caller reads or stops `stream_id` as: from the stream token, or else
    from its key. A token must be unexpired to start a read."""
    token = request.query_params.get("token")
    if token is None or authorization(request.scope) is not None:
        return identify(request).tenant
    tokens: StreamTokens = request.app.state.stream_tokens
    try:
        grant = tokens.check(token, stream_id)
        if grant.expired and starting:
            raise StreamTokenRefused("expired")
    except TenancyRefusal as refusal:
        raise refusal_error(refusal) from None
    return grant.tenant


def _stream_id(request: Request) -> str:
    stream_id: str = request.path_params["stream_id"]
    if not _STREAM_ID.fullmatch(stream_id):
        raise ApiError(404, "stream_not_found", "No such answer.")
    return stream_id


async def read_stream(request: Request) -> ASGIApp:
    stream_id = _stream_id(request)
    after = _last_event_id(request)
    tenant = await _tenant_for(request, stream_id, starting=after < 0)
    answers: Answers = request.app.state.answers
    settings: Settings = request.app.state.service.settings
    request_id = _request_id()
    owner = await answers.store.tenant(stream_id)
    if owner is not None and owner != tenant:
        raise ApiError(403, "stream_forbidden", "This answer is not yours.")
    if owner is None:  # gone: never a new answer, one frame that says so
        return _expired(after, settings, request_id)
    if after >= 0:
        rest = await answers.store.read(stream_id, after, 0.0)
        if rest is not None and rest.ended and not rest.frames:
            return Response(status_code=204)  # read to the end: EventSource stops here
    return ReaderResponse(answers, stream_id, after, settings, request_id)


def _expired(after: int, settings: Settings, request_id: str) -> Response:
    body = b"retry: %d\n\n" % settings.sse_retry_ms + expired_frame(after + 1, request_id)
    return Response(body, media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stop_stream(request: Request) -> Response:
    stream_id = _stream_id(request)
    tenant = await _tenant_for(request, stream_id, starting=False)
    answers: Answers = request.app.state.answers
    owner = await answers.store.tenant(stream_id)
    if owner is None:
        raise ApiError(404, "stream_not_found", "No such answer, or it has ended.")
    if owner != tenant:
        raise ApiError(403, "stream_forbidden", "This answer is not yours.")
    await answers.stop(stream_id)
    return Response(status_code=204)


def _request_id() -> str:
    ctx = trace_context.current.get()
    assert ctx is not None, "EdgeMiddleware sets the request context"
    return ctx.request_id
