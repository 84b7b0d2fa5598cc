"""OpenAI's Chat Completions API, for clients that speak it: only the body and the frames'
encoding differ from `/chat`; keys, limits, guards, the route chain and logs are the same."""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from app.errors import JSONResponse
from app.openai_responses import ENDPOINT, CompletionChunksResponse, render_completion
from app.openai_schemas import parse_completions
from app.responses import CollectedResponse, OnEnd
from app.routes import Ask, answer, identify
from app.schemas import InputLimits
from app.service import ChatService
from config.settings import Settings
from streaming.pipeline import ChatJob
from tenancy.identity import Identity

STARTED = int(time.time())  # `created` of each model listed: when this process started


def _parse(payload: dict[str, Any], limits: InputLimits) -> Ask:
    parsed = parse_completions(payload, limits)
    return Ask(parsed.chat, "openai_stream" if parsed.stream else "openai", parsed.model,
               parsed.include_usage)


async def _respond(request: Request, ask: Ask, identity: Identity, job: ChatJob,
                   on_end: OnEnd) -> ASGIApp:
    settings: Settings = request.app.state.service.settings
    stop: anyio.Event = request.app.state.lifecycle.stopping
    if ask.endpoint == "openai_stream":
        return CompletionChunksResponse(job, settings, stop, on_end, ask.include_usage)
    return CollectedResponse(job, settings, stop, on_end, render=render_completion)


async def chat_completions(request: Request) -> ASGIApp:
    return await answer(request, ENDPOINT, _parse, _respond, stream=False)


async def models(request: Request) -> Response:
    """The model names this key may ask for."""
    identity = identify(request)
    service: ChatService = request.app.state.service
    listed = service.settings.tenancy.policy(identity.tenant).models
    return JSONResponse({"object": "list", "data": [
        {"id": entry.name, "object": "model", "created": STARTED, "owned_by": entry.owner}
        for entry in service.models.listing(listed)]})
