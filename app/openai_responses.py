"""How one pipeline run leaves `/v1/chat/completions`: OpenAI's chunks, or its whole answer.

The stream waits for the answer's first text before it answers: an answer that fails before
any text (every route down, its deadline passed, the output guard refusing its first words)
is then an HTTP error with `Retry-After` where it applies, which the SDKs raise as their error
class and retry; once text is out, the status is 200 and a failure is the error chunk. While
it waits, heartbeats are dropped: nothing has been sent for them to keep alive.
"""

from __future__ import annotations

import contextlib
import time

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from sse_starlette.sse import SendTimeoutError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.errors import JSONResponse, error_response
from app.event_stream import EventStreamResponse
from app.responses import (
    FRAME_BUFFER,
    SSE_HEADERS,
    OnEnd,
    PipelineResponse,
    cancel_on_disconnect,
    drop_stalled,
    failure_error,
    mark_disconnected,
    sse_bytes,
)
from config.settings import Settings
from streaming.collect import CollectedAnswer
from streaming.frames import DoneFrame, ErrorFrame, Frame, HeartbeatFrame, MetaFrame
from streaming.openai_frames import ChunkEncoder, completion
from streaming.pipeline import ChatJob

ENDPOINT = "/v1/chat/completions"


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id


def render_completion(answer: CollectedAnswer, request_id: str) -> Response:
    terminal = answer.terminal
    if isinstance(terminal, DoneFrame):
        return JSONResponse(completion(completion_id(request_id), int(time.time()),
                                       terminal.model_route, answer.text,
                                       terminal.finish_reason, terminal.usage))
    return error_response(failure_error(terminal), openai=True)


class CompletionChunksResponse(PipelineResponse):
    """`text/event-stream` of `chat.completion.chunk` objects."""

    def __init__(self, job: ChatJob, settings: Settings, stop: anyio.Event | None,
                 on_end: OnEnd, include_usage: bool) -> None:
        super().__init__(job, settings, stop, on_end)
        self._include_usage = include_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        frames_in, frames_out = anyio.create_memory_object_stream[Frame](FRAME_BUFFER)
        status = 200
        try:
            with frames_in, frames_out:
                async with anyio.create_task_group() as pipeline:
                    pipeline.start_soon(self._run_pipeline, frames_in)
                    try:
                        status = await self._answer(frames_out, scope, receive, send)
                    finally:
                        pipeline.cancel_scope.cancel()  # the client left, or it is over
        except BaseException:
            if self._job.record.outcome == "pending":
                self._job.record.outcome = "cancelled"
            raise
        finally:
            await self._on_end(status)

    async def _answer(self, frames: MemoryObjectReceiveStream[Frame], scope: Scope,
                      receive: Receive, send: Send) -> int:
        job = self._job
        opening: list[Frame] = []  # the meta frame, then the first text or the end
        async with anyio.create_task_group() as waiting:
            waiting.start_soon(cancel_on_disconnect, receive, job.record, waiting.cancel_scope,
                               ENDPOINT)
            with contextlib.suppress(anyio.EndOfStream):
                while not opening or isinstance(opening[-1], MetaFrame):
                    frame = await frames.receive()
                    if not isinstance(frame, HeartbeatFrame):
                        opening.append(frame)
            waiting.cancel_scope.cancel()
        if not opening or isinstance(opening[-1], MetaFrame):  # the client left first
            return 499
        if isinstance(opening[-1], ErrorFrame) and not job.record.tokens_emitted:
            response = error_response(failure_error(opening[-1]), openai=True)
            await response(scope, receive, send)
            return response.status_code
        encoder = ChunkEncoder(completion_id(job.request_id), int(time.time()),
                               job.provider.route, self._include_usage)

        async def on_disconnect(message: Message) -> None:
            mark_disconnected(job.record, ENDPOINT)

        response_ = EventStreamResponse(
            sse_bytes(frames, encoder, b"".join(encoder.encode(f) for f in opening)),
            headers=SSE_HEADERS,
            ping=0,  # the pipeline sends heartbeats, and only when the stream is quiet
            sep="\n",
            send_timeout=self._settings.connections.send_timeout_s,
            client_close_handler_callable=on_disconnect,
            shutdown_grace_period=self._settings.shutdown_grace_s + 1.0,
        )
        try:
            await response_(scope, receive, send)
        except SendTimeoutError:
            drop_stalled(job.record, scope, ENDPOINT)
        return 200
