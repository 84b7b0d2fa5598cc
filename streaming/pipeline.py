"""One request's pipeline: one anyio task group that turns a provider stream into frames.

Tasks in the group:
- relay: provider events -> output stage -> `meta` and `token` frames, then exactly one
  terminal frame (`done` or `error`), whatever happened;
- ticker: a heartbeat frame whenever nothing was sent for `heartbeat_s`; text the output
  guard held for its maximum hold time while the provider is quiet; and, once the server
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
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectStreamStatistics

from cache.entry import CACHE_ROUTE, CacheHit
from providers.errors import ProviderError, ProviderUnavailable
from providers.tokens import count_tokens
from providers.types import ChainEvent, CompletionRequest, RouteAnswering, TextDelta, Usage
from streaming.chain import AllRoutesFailed
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
from streaming.output_guard import OutputBlocked, OutputStage
from streaming.record import StreamRecord
from streaming.upstream import close_upstream
from telemetry.metrics import ACTIVE_STREAMS, GapTally

# Which endpoint an answer leaves by: /chat, /chat/stream, /v1/chat/completions collected or
# streamed. Streamed ones get heartbeats.
Endpoint = Literal["chat", "stream", "openai", "openai_stream"]
STREAMED: frozenset[Endpoint] = frozenset({"stream", "openai_stream"})

logger = logging.getLogger("hello_ship.pipeline")

_SURROGATE = re.compile("[\ud800-\udfff]")


class CacheTier(Protocol):
    """The answer cache as one request may use it: looked up before any route (`first`), or
    once every route has failed, before the static copy."""

    @property
    def first(self) -> bool: ...

    async def lookup(self) -> CacheHit | None: ...


class EventSource(Protocol):
    """What the pipeline reads: one provider, or a route chain of them."""

    @property
    def route(self) -> str: ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[ChainEvent, None]: ...


@dataclass(frozen=True, slots=True)
class ChatJob:
    request_id: str
    request: CompletionRequest
    provider: EventSource
    stage: OutputStage
    record: StreamRecord
    heartbeat_s: float | None = None
    idle_timeout_s: float | None = None  # longest silence between tokens once they flow
    deadline_s: float | None = None  # the whole request, from its start
    degraded_message: str | None = None  # the copy when no route could answer
    # Runs once the answer's outcome is recorded, before its terminal frame goes out, so
    # whatever it settles (the bill, the stream slot) is settled when the client sees the end.
    on_terminal: Callable[[StreamRecord], Awaitable[None]] | None = None
    endpoint: Endpoint = "stream"  # the metrics' label
    # One route chosen by an operator (X-Route): its answer or failure is no fallback.
    pinned: bool = False
    stream_id: str | None = None  # a resumable answer's id, named in its meta frame
    cache: CacheTier | None = None

    @property
    def route(self) -> str:
        """The route that answered, or the first one when none did."""
        return self.record.model_route or self.provider.route


CutReason = Literal["shutdown", "idle", "deadline"]
# Why the ticker ended the answer: a time limit, or what the guard raised on text it released
# (`OutputBlocked`, or a detector's bug).
Cut = CutReason | Exception
CHAIN_DEADLINE_GRACE_S = 1.0


class FrameOut(Protocol):
    """Where the frames go: a memory channel to a response (which may push back), or an
    answer's own log (which takes every frame at once)."""

    async def send(self, item: Frame, /) -> None: ...

    def send_nowait(self, item: Frame, /) -> None: ...

    def statistics(self) -> MemoryObjectStreamStatistics: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Any: ...


class _Emitter:
    """The single way frames leave the pipeline; remembers when the stream last spoke."""

    __slots__ = ("_last_token", "_out", "_record", "answering", "gaps", "last_event",
                 "last_sent", "stuck")

    def __init__(self, out: FrameOut, record: StreamRecord) -> None:
        self._out = out
        self._record = record
        self.gaps = GapTally()  # between token frames, for the metrics
        self._last_token = 0.0
        self.last_sent = time.monotonic()
        self.last_event = self.last_sent  # when the provider last sent text
        self.answering = False  # a route has started its answer
        # A token frame is waiting for room; still true after a cancel, it was never sent.
        self.stuck = False

    async def send(self, frame: Frame) -> None:
        await self._out.send(frame)
        self.last_sent = time.monotonic()

    async def _send_token(self, frame: TokenFrame) -> None:
        # Skip the checkpoint `send` takes when there is room: the relay already yields on
        # every provider read, and per-token checkpoints cost a loop turn each.
        try:
            self._out.send_nowait(frame)
        except anyio.WouldBlock:
            # The provider is not read while a slow client holds this up: that wait is not
            # the provider's silence, so the idle limit is off until the frame is taken.
            self.last_event, self.stuck = math.inf, True
            await self._out.send(frame)
            self.stuck = False
            self.last_event = self.last_sent = time.monotonic()

    def _count_token(self, now: float, text: str) -> None:
        record = self._record
        if record.released is not None:
            record.released.append(text)
        if record.first_token_at is None:
            record.first_token_at = now
        else:
            self.gaps.add(now - self._last_token)
        self._last_token = now
        record.tokens_emitted += 1
        self.last_sent = max(self.last_sent, now)  # a send that waited already set it later

    async def token(self, text: str, now: float) -> None:
        await self._send_token(TokenFrame(text))
        self._count_token(now, text)  # once sent: a frame dropped by a cancel was never emitted

    def has_room(self) -> bool:
        """A frame sent now would not wait, nor overtake a frame that is waiting."""
        stats = self._out.statistics()
        return (stats.current_buffer_used < stats.max_buffer_size
                and not stats.tasks_waiting_send and not self.stuck)

    def token_now(self, text: str, now: float) -> None:
        """Send a token frame without waiting; only after `has_room`."""
        self._out.send_nowait(TokenFrame(text))
        self._count_token(now, text)


async def run_pipeline(
    job: ChatJob,
    out: FrameOut,
    *,
    stop: anyio.Event | None = None,
    stop_grace_s: float = 0.0,
) -> None:
    active = ACTIVE_STREAMS.labels(job.endpoint)
    active.inc()
    emitter = _Emitter(out, job.record)
    try:
        await _run(job, emitter, out, stop, stop_grace_s)
    finally:
        active.dec()
        emitter.gaps.record(job.route, job.endpoint)


async def _run(job: ChatJob, emitter: _Emitter, out: FrameOut,
               stop: anyio.Event | None, stop_grace_s: float) -> None:
    async with out:
        terminal: TerminalFrame | None = None
        cut: list[Cut] = []
        async with anyio.create_task_group() as group:
            if (job.heartbeat_s or stop is not None or job.idle_timeout_s or job.deadline_s
                    or job.stage.holds_for_time):
                group.start_soon(_tick, emitter, job, stop, stop_grace_s, group.cancel_scope,
                                 cut)
            terminal = await _relay(job, emitter)
            group.cancel_scope.cancel()
        if terminal is None:  # only the ticker cancels this group before the relay ends
            reason = cut[0] if cut else "shutdown"
            if not isinstance(reason, Exception):
                reason = await _release_held(job.stage, emitter) or reason
            terminal = _cut_frame(job, reason)
        _record_terminal(job.record, terminal)
        if job.on_terminal is not None:
            await job.on_terminal(job.record)
        await emitter.send(terminal)


def _cut_frame(job: ChatJob, reason: Cut) -> TerminalFrame:
    if isinstance(reason, Exception):
        return _failure_frame(job, reason)
    if reason == "shutdown":
        # Not a provider's failure, so no `provider_failed`: this line says which answers
        # a restart cut, and how far each had got.
        logger.warning("shutdown_cut", extra={"model_route": job.record.model_route,
                                              "tokens_emitted": job.record.tokens_emitted})
        return error_frame("shutting_down", request_id=job.request_id,
                           tokens_emitted=job.record.tokens_emitted)
    if reason == "idle":
        return _failure_frame(job, ProviderUnavailable(
            f"no token for {job.idle_timeout_s}s (IDLE_TIMEOUT_S)"))
    if job.record.deltas_received:  # a route answered, though the guard may hold it all
        return _failure_frame(job, ProviderUnavailable(
            f"request deadline of {job.deadline_s}s passed (REQUEST_TIMEOUT_S)"))
    return _failure_frame(job, AllRoutesFailed(
        f"request deadline of {job.deadline_s}s passed (REQUEST_TIMEOUT_S)",
        retry_after=None, attempts=0))


async def _relay(job: ChatJob, emitter: _Emitter) -> TerminalFrame:
    if job.cache is not None and job.cache.first:
        hit = await job.cache.lookup()
        if hit is not None:
            return await _relay_cached(job, emitter, hit)
    record, stage, route = job.record, job.stage, job.provider.route
    usage: Usage | None = None
    finish_reason = "stop"
    try:
        events = job.provider.stream(job.request)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    record.deltas_received += 1
                    if record.model_route is None:
                        record.model_route = route
                        emitter.answering = True
                        await emitter.send(MetaFrame(job.request_id, route, job.stream_id))
                    now = time.monotonic()
                    emitter.last_event = now
                    text = stage.feed(_encodable(event.text), now)
                    if text:
                        await emitter.token(text, now)
                elif isinstance(event, Usage):
                    usage = record.usage = event  # kept for the bill if the answer breaks off
                elif isinstance(event, RouteAnswering):
                    emitter.answering, emitter.last_event = True, time.monotonic()
                    route = event.route
                    record.fallback_tier = event.tier
                    record.attempts = event.attempt
                else:
                    finish_reason = event.reason
        finally:
            await close_upstream(events, route)
        rest = stage.flush()
        if rest:
            await emitter.token(rest, time.monotonic())
    except Exception as exc:
        if anyio.current_effective_deadline() == -math.inf:
            # Raised while unwinding a cancel (an adapter's cleanup failed): the cancel is what
            # ended this stream, so let it continue.
            logger.exception("provider_close_failed", extra={"route": route})
            await anyio.lowlevel.checkpoint()
        if (isinstance(exc, AllRoutesFailed) and not record.deltas_received
                and job.cache is not None and not job.cache.first and not job.pinned):
            hit = await job.cache.lookup()
            if hit is not None:
                logger.warning("fallback_used", extra={
                    "from_route": job.provider.route, "to_route": CACHE_ROUTE, "tier": "cache",
                    "failed_attempts": exc.attempts, "incident_id": None})
                return await _relay_cached(job, emitter, hit)
        if not isinstance(exc, OutputBlocked):
            exc = await _release_held(stage, emitter) or exc
        return _failure_frame(job, exc)
    if record.model_route is None:  # an empty answer still names its route
        record.model_route = route
        await emitter.send(MetaFrame(job.request_id, route, job.stream_id))
    if usage is None:  # the vendor sent no usage: estimate it (vendors send ~a token a delta)
        usage = Usage(sum(count_tokens(m.content) for m in job.request.messages),
                      record.deltas_received)
    return DoneFrame(finish_reason=finish_reason, usage=usage, model_route=route)


_PIECE = re.compile(r"\S+\s*|\s+")


async def _relay_cached(job: ChatJob, emitter: _Emitter, hit: CacheHit) -> TerminalFrame:
    """A cached answer, streamed word by word like a model's, through the output guard (the
    tenant's policy may have changed since it was written). No vendor is billed for it."""
    record, stage = job.record, job.stage
    record.model_route, record.fallback_tier, record.cache_hit = CACHE_ROUTE, "cache", hit
    emitter.answering = True
    await emitter.send(MetaFrame(job.request_id, CACHE_ROUTE, job.stream_id))
    try:
        for piece in _PIECE.findall(hit.entry.answer):
            now = time.monotonic()
            emitter.last_event = now
            text = stage.feed(piece, now)
            if text:
                await emitter.token(text, now)
        rest = stage.flush()
        if rest:
            await emitter.token(rest, time.monotonic())
    except OutputBlocked as blocked:
        return _failure_frame(job, blocked)
    return DoneFrame(finish_reason="stop", usage=Usage(0, 0), model_route=CACHE_ROUTE,
                     cache=hit)


async def _release_held(stage: OutputStage, emitter: _Emitter) -> Exception | None:
    """Before an answer that broke off ends, send what the guard held and cleared, so the
    client keeps every word the model got to; what the guard raised instead, if it refused
    that text or failed (then nothing is sent: fail closed). Nothing is sent either after a
    frame was dropped, which would leave a gap in the answer."""
    if emitter.stuck:
        return None
    try:
        rest = stage.flush(complete=False)
    except Exception as refused:
        return refused
    if rest:
        await emitter.token(rest, time.monotonic())
    return None


def _failure_frame(job: ChatJob, exc: Exception) -> ErrorFrame:
    record = job.record
    route, tokens_emitted = job.route, record.tokens_emitted
    if isinstance(exc, ProviderError):
        degraded = isinstance(exc, AllRoutesFailed) and not tokens_emitted
        if degraded:
            record.fallback_tier = "static"
        logger.warning("provider_failed", extra={
            "route": route,
            "error_class": type(exc).__name__,
            "detail": exc.message,  # adapters write it without vendor text or keys
            "status_code": exc.status_code,
            "retryable": exc.retryable,
            "tokens_emitted": tokens_emitted,
        })
        frame = error_frame(provider_failure_code(exc, tokens_emitted),
                            request_id=job.request_id, tokens_emitted=tokens_emitted,
                            retry_after=exc.retry_after,
                            message=job.degraded_message if degraded else None)
        if degraded and isinstance(exc, AllRoutesFailed) and not job.pinned:
            # The chain's last tier: logged like a fallback route, so one event counts both.
            logger.warning("fallback_used", extra={
                "from_route": job.provider.route, "to_route": None, "tier": "static",
                "failed_attempts": exc.attempts, "incident_id": frame.incident_id})
        return frame
    if isinstance(exc, OutputBlocked):
        record.blocked_by = exc.detector
        logger.warning("output_blocked", extra={"route": route, "detector": exc.detector,
                                                "category": exc.category,
                                                "tokens_emitted": tokens_emitted})
        return error_frame("output_blocked", request_id=job.request_id,
                           tokens_emitted=tokens_emitted)
    logger.error("pipeline_failed", extra={"route": route}, exc_info=exc)
    return error_frame("internal_error", request_id=job.request_id,
                       tokens_emitted=tokens_emitted)


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


async def _tick(emitter: _Emitter, job: ChatJob, stop: anyio.Event | None, grace_s: float,
                group_scope: anyio.CancelScope, cut: list[Cut]) -> None:
    """One timer task per stream for everything time-based: heartbeats while the stream is
    quiet, releasing text the output guard held for its hold time, the idle limit between
    the provider's events, the request deadline, and once `stop` is set, the cut after the
    shutdown grace. A cut cancels the relay and says why in `cut`.
    """
    heartbeat_s, idle_s, stage = job.heartbeat_s, job.idle_timeout_s, job.stage
    deadline = job.record.started_at + job.deadline_s if job.deadline_s else math.inf
    cut_at = math.inf
    while True:
        now = time.monotonic()
        if stop is not None and cut_at == math.inf and stop.is_set():
            cut_at = now + grace_s
        answering = emitter.answering
        idle_at = emitter.last_event + idle_s if idle_s and answering else math.inf
        # Until a route starts answering, the route chain keeps to the deadline itself (and
        # says which routes it tried); this is only its backstop.
        deadline_at = deadline if answering else deadline + CHAIN_DEADLINE_GRACE_S
        reason: CutReason | None = ("shutdown" if now >= cut_at else "deadline"
                                    if now >= deadline_at else "idle" if now >= idle_at
                                    else None)
        if reason is not None:
            cut.append(reason)
            group_scope.cancel()
            return
        release_at = stage.deadline()
        if release_at is not None and now >= release_at:
            # Released text is sent without waiting, so cancelling this task (the relay
            # ended) can never drop it mid-send. A reader too far behind to take it has
            # frames to read meanwhile: the release is tried again one hold time later.
            if not emitter.has_room():
                release_at = now + stage.hold_s
            else:
                try:
                    text = stage.release_due(now)
                except Exception as refused:  # OutputBlocked, or a detector's bug
                    cut.append(refused)
                    group_scope.cancel()
                    return
                if text:
                    emitter.token_now(text, now)
                    continue
                release_at = stage.deadline()  # all of it kept back: a new hold began
        next_beat = emitter.last_sent + heartbeat_s if heartbeat_s else math.inf
        if now >= next_beat:
            await emitter.send(HEARTBEAT)
            continue
        wake = min(next_beat, cut_at, deadline_at, idle_at,
                   math.inf if release_at is None else release_at)
        if stage.holds_for_time:
            # Text the relay gives the guard while this sleeps is due one hold time later at
            # the soonest: waking that often finds each deadline before it passes.
            wake = min(wake, now + stage.hold_s)
        if idle_s and idle_at == math.inf:
            # An answer may start (or a blocked send end) while this sleeps: waking within
            # `idle_s` arms the idle limit before it could be due.
            wake = min(wake, now + idle_s)
        if not answering and deadline > now:
            wake = min(wake, deadline)  # to arm the deadline proper if answering started
        if stop is not None and cut_at == math.inf:
            with anyio.move_on_after(wake - now):
                await stop.wait()
        elif wake == math.inf:
            await anyio.sleep_forever()
        else:
            await anyio.sleep(wake - now)
