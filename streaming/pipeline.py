"""One request's pipeline: one anyio task group that turns a provider stream into frames.

Tasks in the group:
- relay: provider events -> output stage -> `meta` and `token` frames, then exactly one
  terminal frame (`done` or `error`), whatever happened;
- ticker: a heartbeat frame whenever nothing was sent for `heartbeat_s`, and, once the server
  is shutting down, a cut after `stop_grace_s` that ends the answer with a `shutting_down`
  error frame instead of leaving the client mid-sentence.

All frames go through the one send stream the caller passes in, which is closed at the end, so
the caller reads with `async for`. Cancelling the caller (the client left) cancels the group;
the provider iterator is then closed, which is how adapters release their upstream response.
Nothing here yields from inside the task group, and nothing per token allocates more than the
token frame itself.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from providers.base import Provider
from providers.errors import ProviderError
from providers.tokens import count_tokens
from providers.types import CompletionRequest, ProviderEvent, TextDelta, Usage
from streaming.failures import error_frame, provider_failure_code
from streaming.frames import (
    HEARTBEAT,
    DoneFrame,
    ErrorFrame,
    Frame,
    MetaFrame,
    TerminalFrame,
    TokenFrame,
)
from streaming.moderation import OutputBlocked, OutputStage
from streaming.record import StreamRecord

logger = logging.getLogger("hello_ship.pipeline")

UPSTREAM_CLOSE_TIMEOUT_S = 5.0
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ChatJob:
    request_id: str
    request: CompletionRequest
    provider: Provider
    stage: OutputStage
    record: StreamRecord
    heartbeat_s: float | None = None


class _Emitter:
    """The single way frames leave the pipeline; remembers when the stream last spoke."""

    __slots__ = ("_out", "_record", "last_sent")

    def __init__(self, out: MemoryObjectSendStream[Frame], record: StreamRecord) -> None:
        self._out = out
        self._record = record
        self.last_sent = time.monotonic()

    async def send(self, frame: Frame) -> None:
        await self._out.send(frame)
        self.last_sent = time.monotonic()

    async def _send_token(self, frame: TokenFrame) -> None:
        # Skip the checkpoint `send` takes when there is room: the relay already yields on
        # every provider read, and per-token checkpoints cost a loop turn each.
        try:
            self._out.send_nowait(frame)
        except anyio.WouldBlock:
            await self._out.send(frame)

    async def token(self, text: str, now: float) -> None:
        record = self._record
        if record.first_token_at is None:
            record.first_token_at = now
        record.tokens_emitted += 1
        await self._send_token(TokenFrame(text))
        self.last_sent = now


async def run_pipeline(
    job: ChatJob,
    out: MemoryObjectSendStream[Frame],
    *,
    stop: anyio.Event | None = None,
    stop_grace_s: float = 0.0,
) -> None:
    emitter = _Emitter(out, job.record)
    async with out:
        terminal: TerminalFrame | None = None
        async with anyio.create_task_group() as group:
            if job.heartbeat_s or stop is not None:
                group.start_soon(_tick, emitter, job.heartbeat_s, stop, stop_grace_s,
                                 group.cancel_scope)
            terminal = await _relay(job, emitter)
            group.cancel_scope.cancel()
        if terminal is None:  # only the ticker cancels this group before the relay ends
            terminal = error_frame("shutting_down", request_id=job.request_id,
                                   tokens_emitted=job.record.tokens_emitted)
        _record_terminal(job.record, terminal)
        await emitter.send(terminal)


async def _relay(job: ChatJob, emitter: _Emitter) -> TerminalFrame:
    record, stage, route = job.record, job.stage, job.provider.route
    usage: Usage | None = None
    finish_reason = "stop"
    deltas = 0
    try:
        events = job.provider.stream(job.request)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    deltas += 1
                    if record.model_route is None:
                        record.model_route = route
                        await emitter.send(MetaFrame(job.request_id, route))
                    now = time.monotonic()
                    text = stage.feed(_encodable(event.text), now)
                    if text:
                        await emitter.token(text, now)
                elif isinstance(event, Usage):
                    usage = event
                else:
                    finish_reason = event.reason
        finally:
            await _close_upstream(events, route)
        rest = stage.flush()
        if rest:
            await emitter.token(rest, time.monotonic())
    except Exception as exc:
        if anyio.current_effective_deadline() == -math.inf:
            # Raised while unwinding a cancel (an adapter's cleanup failed): the cancel is what
            # ended this stream, so let it continue.
            logger.exception("provider_close_failed", extra={"route": route})
            await anyio.lowlevel.checkpoint()
        return _failure_frame(job, exc)
    if record.model_route is None:  # an empty answer still names its route
        record.model_route = route
        await emitter.send(MetaFrame(job.request_id, route))
    if usage is None:  # the vendor sent no usage: estimate it (vendors send ~a token a delta)
        usage = Usage(sum(count_tokens(m.content) for m in job.request.messages), deltas)
    return DoneFrame(finish_reason=finish_reason, usage=usage, model_route=route)


def _failure_frame(job: ChatJob, exc: Exception) -> ErrorFrame:
    route, tokens_emitted = job.provider.route, job.record.tokens_emitted
    if isinstance(exc, ProviderError):
        logger.warning("provider_failed", extra={
            "route": route,
            "error_class": type(exc).__name__,
            "detail": exc.message,  # adapters write it without vendor text or keys
            "status_code": exc.status_code,
            "retryable": exc.retryable,
            "tokens_emitted": tokens_emitted,
        })
        return error_frame(provider_failure_code(exc, tokens_emitted), request_id=job.request_id,
                           tokens_emitted=tokens_emitted, retry_after=exc.retry_after)
    if isinstance(exc, OutputBlocked):
        logger.warning("output_blocked", extra={"route": route, "policy": exc.code})
        return error_frame("output_blocked", request_id=job.request_id,
                           tokens_emitted=tokens_emitted)
    logger.error("pipeline_failed", extra={"route": route}, exc_info=exc)
    return error_frame("internal_error", request_id=job.request_id,
                       tokens_emitted=tokens_emitted)


async def _close_upstream(events: AsyncGenerator[ProviderEvent, None], route: str) -> None:
    """Close the provider stream even when the relay was cancelled, within a bound.

    A cancelled scope would interrupt every await of the adapter's cleanup, so a stream cut
    while it waited at a `yield` could not release its upstream response. A failing cleanup is
    logged, never allowed to replace what really ended the stream.
    """
    with anyio.move_on_after(UPSTREAM_CLOSE_TIMEOUT_S, shield=True):
        try:
            await events.aclose()
        except Exception:
            logger.exception("provider_close_failed", extra={"route": route})


def _encodable(text: str) -> str:
    """The text with lone surrogates (a pair split across two deltas) replaced by U+FFFD.

    They cannot be encoded as UTF-8 or JSON, so one would otherwise break the frame and the
    stream. ASCII text, nearly every token, is passed through on a flag check.
    """
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _record_terminal(record: StreamRecord, terminal: TerminalFrame) -> None:
    if isinstance(terminal, ErrorFrame):
        record.outcome = "error"
        record.error_code = terminal.code
        record.incident_id = terminal.incident_id
        record.finish_reason = "error"
    else:
        record.outcome = "ok"
        record.usage = terminal.usage
        record.finish_reason = terminal.finish_reason


async def _tick(emitter: _Emitter, heartbeat_s: float | None, stop: anyio.Event | None,
                grace_s: float, group_scope: anyio.CancelScope) -> None:
    """Heartbeats while the stream is quiet; once `stop` is set, cuts the relay after the grace.

    One task does both so that an open stream costs one timer task, not two.
    """
    cut_at = math.inf
    while True:
        now = time.monotonic()
        if stop is not None and cut_at == math.inf and stop.is_set():
            cut_at = now + grace_s
        if now >= cut_at:
            group_scope.cancel()
            return
        next_beat = emitter.last_sent + heartbeat_s if heartbeat_s else math.inf
        if now >= next_beat:
            await emitter.send(HEARTBEAT)
            continue
        wake = min(next_beat, cut_at)
        if stop is not None and cut_at == math.inf:
            with anyio.move_on_after(wake - now):
                await stop.wait()
        else:
            await anyio.sleep(wake - now)
