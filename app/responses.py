"""How one pipeline run leaves the edge: as an SSE stream, or collected into one JSON body.

Both run the pipeline in a task group next to a watch on the client connection, so a client
that leaves cancels the pipeline, the provider call included, on either endpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sse_starlette.sse import SendTimeoutError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.connections import ABORT
from app.errors import ApiError, JSONResponse, error_response
from app.event_stream import EventStreamResponse
from config.settings import Settings
from streaming.collect import CollectedAnswer, collect_answer
from streaming.frames import (
    DoneFrame,
    ErrorFrame,
    Frame,
    cache_payload,
    sse_retry,
    usage_payload,
)
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord
from streaming.resumable import Answers

logger = logging.getLogger("hello_ship.edge")

# Deep enough to absorb a burst of tokens while a send is in flight, small enough that a
# stalled client holds back the producer instead of buffering its whole answer.
FRAME_BUFFER = 32

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# error code -> HTTP status on the non-streaming endpoint
ERROR_STATUS = {
    "provider_unavailable": 503,
    "shutting_down": 503,
    "provider_error": 502,
    "stream_interrupted": 502,
    "output_blocked": 502,  # the model's answer was refused, not the caller's request
    "internal_error": 500,
}

# The path each endpoint is requested by, as logs name it.
PATHS = {"chat": "/chat", "stream": "/chat/stream", "openai": "/v1/chat/completions",
         "openai_stream": "/v1/chat/completions"}

# Called once when the response is over, with its HTTP status: logs and settles the bill.
OnEnd = Callable[[int], Awaitable[None]]
# The collected answer (or its failure) as the endpoint's response body.
Render = Callable[[CollectedAnswer, str], Response]


def mark_disconnected(record: StreamRecord, endpoint: str) -> None:
    if record.outcome == "pending":
        record.outcome = "client_disconnected"
        log_client_gone(record, endpoint, "closed")


def log_client_gone(record: StreamRecord, endpoint: str, reason: str) -> None:
    """Logged when the edge notices, so the line says how far the answer had got then;
    `request_end` follows once the pipeline has unwound."""
    logger.info("client_disconnected", extra={
        "endpoint": endpoint,
        "reason": reason,
        "model_route": record.model_route,
        "tokens_emitted": record.tokens_emitted,
        "after_first_token": record.first_token_at is not None,
        "elapsed_ms": round((time.monotonic() - record.started_at) * 1000, 1),
    })


class FrameEncoder(Protocol):
    def encode(self, frame: Frame) -> bytes: ...


async def sse_bytes(frames: MemoryObjectReceiveStream[Frame], encoder: FrameEncoder,
                    preamble: bytes) -> AsyncIterator[bytes]:
    """SSE bytes of the frames; frames already waiting go out in one write.

    Coalescing never delays a frame (it only takes what is queued when a write is due) and
    each token keeps its own SSE frame; under load it saves a send through every middleware
    and a syscall per token.
    """
    if preamble:
        yield preamble
    while True:
        try:
            frame = frames.receive_nowait()
        except anyio.WouldBlock:
            try:
                frame = await frames.receive()
            except anyio.EndOfStream:
                return
        except anyio.EndOfStream:
            return
        chunk = encoder.encode(frame)
        while True:
            try:
                chunk += encoder.encode(frames.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        yield chunk


def drop_connection(scope: Scope) -> None:
    """The client stopped reading for SEND_TIMEOUT_S: drop its connection quietly (under
    plain uvicorn, which has no such hook, by returning: it logs an error, and drops it)."""
    drop = scope.get("extensions", {}).get(ABORT, {}).get("drop")
    if drop is not None:
        drop()


def drop_stalled(record: StreamRecord, scope: Scope, endpoint: str) -> None:
    """A stalled client whose answer ends with it: the pipeline and the provider call are
    already cancelled; logged as a client gone, and its connection dropped."""
    if record.outcome != "client_disconnected":  # one line per client gone
        log_client_gone(record, endpoint, "stalled")
    record.outcome = "client_stalled"
    drop_connection(scope)


class PipelineResponse:
    """One request's pipeline run, as an ASGI response; subclasses decide how frames leave."""

    def __init__(self, job: ChatJob, settings: Settings, stop: anyio.Event | None,
                 on_end: OnEnd, render: Render | None = None) -> None:
        self._job = job
        self._settings = settings
        self._stop = stop
        self._on_end = on_end
        self._render = render or render_answer

    async def _run_pipeline(self, out: MemoryObjectSendStream[Frame]) -> None:
        await run_pipeline(self._job, out, stop=self._stop,
                           stop_grace_s=self._settings.shutdown_grace_s)


class ReaderResponse:
    """`text/event-stream` of a resumable answer's frames from `after` on (see the SSE
    contract in docs/api.md). The answer runs on its own (`streaming.resumable`): a reader that
    leaves, or is dropped for not reading, does not end it; it may come back."""

    def __init__(self, answers: Answers, stream_id: str, after: int, settings: Settings,
                 request_id: str) -> None:
        self._answers = answers
        self._stream_id = stream_id
        self._after = after
        self._settings = settings
        self._request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self._settings
        run = self._answers.attach(self._stream_id)
        response = EventStreamResponse(
            self._answers.follow(self._stream_id, self._after, run is not None,
                                 sse_retry(settings.sse_retry_ms), self._request_id),
            headers=SSE_HEADERS,
            ping=0,  # the reader sends heartbeats, and only when the stream is quiet
            sep="\n",
            send_timeout=settings.connections.send_timeout_s,
            # The pipeline cuts the answer with an error frame at the grace; sse-starlette's
            # own shutdown cancel is the backstop, after it.
            shutdown_grace_period=settings.shutdown_grace_s + 1.0,
        )
        stalled = False
        try:
            await response(scope, receive, send)
        except SendTimeoutError:  # the answer goes on for its grace
            stalled = True
            drop_connection(scope)
        finally:
            self._answers.detach(run, stalled=stalled)


async def cancel_on_disconnect(receive: Receive, record: StreamRecord,
                               scope: anyio.CancelScope, endpoint: str = "/chat") -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            mark_disconnected(record, endpoint)
            scope.cancel()
            return


class CollectedResponse(PipelineResponse):
    """The pipeline collected into one JSON answer, or the error envelope."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job = self._job
        frames_in, frames_out = anyio.create_memory_object_stream[Frame](FRAME_BUFFER)
        answer: CollectedAnswer | None = None
        status = 200
        try:
            with frames_in, frames_out:
                async with anyio.create_task_group() as group:
                    group.start_soon(cancel_on_disconnect, receive, job.record,
                                     group.cancel_scope, PATHS[job.endpoint])
                    group.start_soon(self._run_pipeline, frames_in)
                    answer = await collect_answer(frames_out)
                    group.cancel_scope.cancel()
            if answer is None:  # the client left; nobody is there to answer
                status = 499
                return
            response = self._render(answer, job.request_id)
            status = response.status_code
            await response(scope, receive, send)
        except Exception:  # a bug: the edge answers 500 in the envelope, and says so
            _mark_failed(job.record)
            status = 500
            raise
        except BaseException:
            if job.record.outcome == "pending":  # the server cut it (shutdown)
                job.record.outcome = "cancelled"
            raise
        finally:
            await self._on_end(status)


def _mark_failed(record: StreamRecord) -> None:
    """The answer (whatever the pipeline made of it) never reached the client."""
    if record.outcome in ("pending", "ok"):
        record.outcome, record.error_code = "error", "internal_error"


def render_answer(answer: CollectedAnswer, request_id: str) -> JSONResponse:
    terminal = answer.terminal
    if isinstance(terminal, DoneFrame):
        return JSONResponse({
            "answer": answer.text,
            "request_id": request_id,
            "model_route": terminal.model_route,
            "finish_reason": terminal.finish_reason,
            "usage": usage_payload(terminal.usage),
            **(cache_payload(terminal.cache) if terminal.cache is not None else {}),
        })
    return error_response(failure_error(terminal))


def failure_error(terminal: ErrorFrame) -> ApiError:
    """An answer that failed before any of it left, as the error a whole response carries."""
    status = ERROR_STATUS.get(terminal.code, 500)
    headers = {"Retry-After": str(math.ceil(terminal.retry_after or 1))} if status == 503 else {}
    return ApiError(status, terminal.code, terminal.message, headers=headers,
                    incident_id=terminal.incident_id, retryable=terminal.retryable,
                    tokens_emitted=terminal.tokens_emitted)
