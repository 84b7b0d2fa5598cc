from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY

from guard.detectors import Category, PatternDetector
from guard.policy import GuardPolicy
from guard.scan import Scanner
from providers.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from providers.types import CompletionRequest, Finish, Message, Usage
from streaming.breaker import CircuitBreaker
from streaming.chain import ChainLink, RetryPolicy, RouteChain
from streaming.failures import ERROR_COPY
from streaming.fallback_budget import RateCap
from streaming.frames import (
    DoneFrame,
    ErrorFrame,
    Frame,
    HeartbeatFrame,
    MetaFrame,
    TokenFrame,
)
from streaming.output_guard import OutputGuard, OutputStage
from streaming.pipeline import ChatJob, EventSource, run_pipeline
from streaming.record import StreamRecord
from tests.fakes import Fail, ScriptedProvider, Sleep, Step, words
from tests.logcapture import CapturedLogs, captured_logs
from tests.telemetry.test_log_schema import assert_documented

REQUEST = CompletionRequest(messages=(Message("user", "hello there"),), max_tokens=100)


def make_job(provider: ScriptedProvider, heartbeat_s: float | None = None,
             stage: OutputStage | None = None) -> ChatJob:
    return ChatJob(request_id="req_test", request=REQUEST, provider=provider,
                   stage=stage or OutputStage(),
                   record=StreamRecord(started_at=time.monotonic()), heartbeat_s=heartbeat_s)


async def frames_of(job: ChatJob, **options: object) -> list[Frame]:
    send, receive = anyio.create_memory_object_stream[Frame](32)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(run_pipeline, job, send, **options))  # type: ignore[arg-type]
            return [frame async for frame in receive]


def terminals(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, DoneFrame | ErrorFrame)]


def text_of(frames: list[Frame]) -> str:
    return "".join(f.token for f in frames if isinstance(f, TokenFrame))


async def test_a_full_answer_is_meta_tokens_done() -> None:
    provider = ScriptedProvider([*words("Hi there friend."), Usage(3, 3), Finish("stop")])
    job = make_job(provider)
    frames = await frames_of(job)
    assert frames[0] == MetaFrame("req_test", "fake/scripted")
    assert text_of(frames) == "Hi there friend."
    assert frames[-1] == DoneFrame("stop", Usage(3, 3), "fake/scripted")
    assert len(terminals(frames)) == 1
    assert job.record.outcome == "ok"
    assert job.record.tokens_emitted == 3
    assert job.record.first_token_at is not None


async def test_missing_usage_is_counted_by_us() -> None:
    frames = await frames_of(make_job(ScriptedProvider(words("one two"))))
    done = frames[-1]
    assert isinstance(done, DoneFrame)
    assert done.usage == Usage(input_tokens=2, output_tokens=2)


async def test_a_surrogate_pair_split_across_deltas_cannot_break_the_stream() -> None:
    frames = await frames_of(make_job(ScriptedProvider(["smile ", "\ud83d", "\ude00", " ok"])))
    assert text_of(frames) == "smile \ufffd\ufffd ok"
    assert isinstance(frames[-1], DoneFrame)


async def test_an_empty_answer_still_has_meta_and_done() -> None:
    frames = await frames_of(make_job(ScriptedProvider([Finish("stop")])))
    assert [type(f) for f in frames] == [MetaFrame, DoneFrame]
    assert frames[0] == MetaFrame("req_test", "fake/scripted")


@pytest.mark.parametrize(("error", "code", "retryable"), [
    (ProviderUnavailable("down", status_code=503), "provider_unavailable", True),
    (ProviderRateLimited("slow down", status_code=429, retry_after=2.0),
     "provider_unavailable", True),
    (ProviderRejected("bad request", status_code=400), "provider_error", False),
    (RuntimeError("a bug"), "internal_error", True),
])
async def test_failure_before_the_first_token_is_one_error_frame(
        error: Exception, code: str, retryable: bool) -> None:
    job = make_job(ScriptedProvider([Sleep(0.01), Fail(error)]))
    frames = await frames_of(job)
    assert len(frames) == 1
    (frame,) = frames
    assert isinstance(frame, ErrorFrame)
    assert (frame.code, frame.retryable, frame.tokens_emitted) == (code, retryable, 0)
    assert frame.incident_id.startswith("inc_")
    assert frame.request_id == "req_test"
    assert job.record.outcome == "error"
    assert job.record.error_code == code
    if isinstance(error, ProviderRateLimited):
        assert frame.retry_after == 2.0


async def test_failure_after_tokens_keeps_them_and_ends_with_one_error() -> None:
    script: list[Step] = [*words("partial answer here"), Fail(ProviderUnavailable("x"))]
    frames = await frames_of(make_job(ScriptedProvider(script)))
    assert text_of(frames) == "partial answer here"
    assert len(terminals(frames)) == 1
    error = frames[-1]
    assert isinstance(error, ErrorFrame)
    assert error.code == "stream_interrupted"
    assert error.tokens_emitted == 3


async def test_heartbeats_fill_a_quiet_stream_only() -> None:
    quiet = await frames_of(make_job(ScriptedProvider([Sleep(0.35), "late"]), heartbeat_s=0.1))
    beats_before_meta = 0
    for frame in quiet:
        if isinstance(frame, MetaFrame):
            break
        beats_before_meta += isinstance(frame, HeartbeatFrame)
    assert beats_before_meta >= 2

    # 30 tokens 20 ms apart: the stream outlasts the 0.3 s interval, no gap comes near it
    busy = await frames_of(make_job(ScriptedProvider(words("busy " * 30, delay=0.02)),
                                    heartbeat_s=0.3))
    assert not any(isinstance(f, HeartbeatFrame) for f in busy)
    assert text_of(busy).startswith("busy busy")


async def test_cancelling_the_reader_closes_the_provider_stream_at_once() -> None:
    provider = ScriptedProvider(words("never ending " * 200, delay=0.01))
    job = make_job(provider, heartbeat_s=0.05)
    send, receive = anyio.create_memory_object_stream[Frame](32)
    seen: list[Frame] = []
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            async for frame in receive:
                seen.append(frame)
                if isinstance(frame, TokenFrame):
                    group.cancel_scope.cancel()  # the client left
                    break
    assert provider.closed_early == 1
    assert provider.open_streams == 0
    assert job.record.outcome == "pending"  # the edge records why it was cancelled


async def test_a_cancelled_stream_still_lets_the_provider_release_its_response() -> None:
    # No delays: the relay is blocked on a full channel, the provider parked at its `yield`.
    provider = ScriptedProvider(["token"] * 10_000, release_s=0.02)
    send, receive = anyio.create_memory_object_stream[Frame](4)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, make_job(provider), send)
            async for frame in receive:
                if isinstance(frame, TokenFrame):
                    group.cancel_scope.cancel()
                    break
    assert provider.closed_early == 1
    assert provider.released == 1  # its awaiting cleanup ran to the end despite the cancel


async def test_shutdown_cuts_a_long_answer_with_one_error_frame() -> None:
    provider = ScriptedProvider(words("long answer " * 100, delay=0.01))
    stop = anyio.Event()
    job = make_job(provider, heartbeat_s=5)

    async def shut_down_soon() -> None:
        await anyio.sleep(0.05)
        stop.set()

    async with anyio.create_task_group() as group:
        group.start_soon(shut_down_soon)
        frames = await frames_of(job, stop=stop, stop_grace_s=0.05)
    assert text_of(frames)
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame)
    assert terminal.code == "shutting_down" and terminal.retryable
    assert provider.closed_early == 1


async def test_a_failing_provider_cleanup_does_not_change_why_the_stream_ended() -> None:
    provider = ScriptedProvider(words("long answer " * 100, delay=0.01),
                                release_error=RuntimeError("cleanup broke"))
    stop = anyio.Event()
    stop.set()
    frames = await frames_of(make_job(provider), stop=stop, stop_grace_s=0.05)
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "shutting_down"


async def test_shutdown_lets_an_answer_finish_within_the_grace() -> None:
    stop = anyio.Event()
    stop.set()
    frames = await frames_of(make_job(ScriptedProvider(words("short one", delay=0.01))),
                             stop=stop, stop_grace_s=1.0)
    assert isinstance(frames[-1], DoneFrame)
    assert text_of(frames) == "short one"


SECRET = PatternDetector("secret_word", "secret", r"secret\w*")
FORBIDDEN = PatternDetector("forbidden", "blocked", r"Forbidden")


def guarded(*detectors: PatternDetector, hold_s: float = 5.0) -> OutputStage:
    # Pattern detectors ask for whole sentences, as configured phrases do in the service.
    return OutputStage(OutputGuard(Scanner(detectors), GuardPolicy(output_secrets="redact"),
                                   max_chars=400, max_hold_s=hold_s, whole_sentences=True))


async def test_the_output_guard_releases_sentences_and_redacts() -> None:
    stage = guarded(SECRET)
    frames = await frames_of(make_job(
        ScriptedProvider(words("First one. The secret part. Tail")), stage=stage))
    released = [f.token for f in frames if isinstance(f, TokenFrame)]
    # a sentence end with nothing after it yet is not final ("part." may be "part.com"):
    # the last word waits for the next token
    assert released == ["First ", "one.", " The [redacted:secret_word] ", "part.", " Tail"]
    assert stage.redactions == {"secret_word": 1}
    done = frames[-1]
    assert isinstance(done, DoneFrame)
    # 3 frames left, but the model produced 6 deltas: usage counts what the model produced
    assert done.usage.output_tokens == 6


async def test_a_blocked_finding_stops_the_stream_and_the_provider() -> None:
    provider = ScriptedProvider(words("Fine here. Forbidden words now. More text", delay=0.01))
    job = make_job(provider, stage=guarded(FORBIDDEN))
    frames = await frames_of(job)
    assert text_of(frames) == "Fine here."
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "output_blocked"
    assert terminal.tokens_emitted == 2  # "Fine ", "here."
    assert provider.closed_early == 1
    assert job.record.blocked_by == "forbidden"


async def timed_tokens(job: ChatJob) -> list[tuple[float, str]]:
    """Each token frame with the seconds from the start at which the reader got it."""
    send, receive = anyio.create_memory_object_stream[Frame](32)
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            async for frame in receive:
                if isinstance(frame, TokenFrame):
                    arrivals.append((time.monotonic() - started, frame.token))
    return arrivals


async def test_held_text_is_released_at_the_hold_time_while_the_provider_is_quiet() -> None:
    """No sentence end and no next token for a while: what is held goes out at the hold
    time (all but the last word, which may still grow into a value a detector must see)."""
    provider = ScriptedProvider(["The answer is being", " computed", Sleep(1.0), " now."])
    arrivals = await timed_tokens(make_job(provider, stage=guarded(SECRET, hold_s=0.15)))
    assert "".join(token for _, token in arrivals) == "The answer is being computed now."
    first_at, first = arrivals[0]
    assert first == "The answer is being "
    assert first_at < 0.6  # the hold time, not the provider's 1 s silence


async def test_a_long_sentence_without_punctuation_still_streams() -> None:
    """Words keep coming for a second with no sentence end: frames go out at least every hold
    time, not at the end."""
    provider = ScriptedProvider(words("word " * 50, delay=0.02))
    arrivals = [at for at, _ in await timed_tokens(
        make_job(provider, stage=guarded(SECRET, hold_s=0.1)))]
    assert len(arrivals) >= 6, arrivals  # about 1 s of words, a release every 0.1 s
    gaps = [b - a for a, b in itertools.pairwise([0.0, *arrivals])]
    assert max(gaps[:-1]) < 0.45, arrivals  # the hold time, with room for a loaded machine


async def test_a_blocked_finding_released_by_the_hold_timer_ends_the_answer() -> None:
    provider = ScriptedProvider(["Fine. Forbidden", " stuff and", Sleep(2.0), " more"])
    job = make_job(provider, stage=guarded(FORBIDDEN, hold_s=0.1))
    started = time.monotonic()
    frames = await frames_of(job)
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "output_blocked"
    assert "Forbidden" not in text_of(frames)
    assert time.monotonic() - started < 1.5
    assert provider.closed_early == 1


async def test_a_slow_reader_is_not_taken_for_a_quiet_provider() -> None:
    """The idle limit is about the vendor: time the relay spent waiting for a slow reader
    to take frames does not count."""
    provider = ScriptedProvider(words("tok " * 100))
    job = ChatJob(request_id="req_test", request=REQUEST, provider=provider,
                  stage=OutputStage(),
                  record=StreamRecord(started_at=time.monotonic()), idle_timeout_s=0.2)
    send, receive = anyio.create_memory_object_stream[Frame](4)
    frames: list[Frame] = []
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            await anyio.sleep(0.5)  # the reader is busy; the buffer fills; the relay waits
            frames = [frame async for frame in receive]
    assert isinstance(terminals(frames)[0], DoneFrame)
    assert text_of(frames).count("tok") == 100


async def test_a_provider_going_quiet_mid_answer_is_cut_at_the_idle_limit() -> None:
    provider = ScriptedProvider(["one", " two", Sleep(5), " three"])
    job = ChatJob(request_id="req_test", request=REQUEST, provider=provider,
                  stage=OutputStage(),
                  record=StreamRecord(started_at=time.monotonic()), idle_timeout_s=0.2)
    started = time.monotonic()
    frames = await frames_of(job)
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "stream_interrupted"
    assert text_of(frames) == "one two" and time.monotonic() - started < 1
    assert provider.closed_early == 1


async def test_the_deadline_holds_while_the_guard_holds_a_stalled_sentence() -> None:
    """Text arrived, none released yet (the sentence is not finished), then the vendor
    stalls: the request deadline still ends it."""
    provider = ScriptedProvider(["Hello", Sleep(30), " world."])
    job = ChatJob(request_id="req_test", request=REQUEST, provider=provider,
                  stage=guarded(SECRET),
                  record=StreamRecord(started_at=time.monotonic()), deadline_s=0.4)
    started = time.monotonic()
    frames = await frames_of(job)
    assert isinstance(terminals(frames)[0], ErrorFrame)
    assert time.monotonic() - started < 0.4 + 0.5


async def test_nothing_leaves_after_a_block_while_the_upstream_call_closes() -> None:
    """The relay blocked and is closing the vendor's response (slowly): the timer must not
    release what the guard still held."""
    provider = ScriptedProvider(["Fine. This is Forbidden. And then the plan ", Sleep(5)],
                                release_s=0.3)
    frames = await frames_of(make_job(provider, stage=guarded(FORBIDDEN, hold_s=0.05)))
    assert text_of(frames) == ""
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "output_blocked"


class BrokenDetector:
    name = "broken"
    category: Category = "pii"
    reach = 16

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if "boom" in text:
            raise RuntimeError("a plugin's bug")
        return iter(())


async def test_a_detector_failing_on_the_timer_still_ends_with_one_terminal_frame() -> None:
    provider = ScriptedProvider(["all fine here boom and", Sleep(5), " more"])
    job = make_job(provider, stage=OutputStage(OutputGuard(
        Scanner([BrokenDetector()]), GuardPolicy(), max_hold_s=0.05)))
    frames = await frames_of(job)
    (terminal,) = terminals(frames)
    assert isinstance(terminal, ErrorFrame) and terminal.code == "internal_error"
    assert "boom" not in text_of(frames)
    assert provider.closed_early == 1


def job_of(provider: EventSource, **fields: Any) -> ChatJob:
    """A job with a fresh record started now; `fields` as ChatJob's."""
    return ChatJob(**{"request_id": "req_test", "request": REQUEST, "provider": provider,
                      "stage": OutputStage(),
                      "record": StreamRecord(started_at=time.monotonic()), **fields})


def one_route(provider: ScriptedProvider) -> RouteChain:
    return RouteChain([ChainLink(provider, CircuitBreaker(provider.route, 5, 60), RateCap(None),
                                 "primary")], RetryPolicy(max_attempts=1))


def own_lines(logs: CapturedLogs) -> list[dict[str, Any]]:
    lines = [line for line in logs.records() if line["logger"].startswith("hello_ship.")]
    for line in lines:
        assert_documented(line)
    return lines


def fields(line: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: line[name] for name in names}


async def test_no_route_answering_is_the_degraded_copy_logged_as_a_static_fallback() -> None:
    provider = ScriptedProvider([Fail(ProviderUnavailable("503", status_code=503))],
                                name="a/one")
    job = job_of(one_route(provider), degraded_message="We are busy; please come back soon.")
    with captured_logs() as logs:
        frames = await frames_of(job)
    [error] = frames
    assert isinstance(error, ErrorFrame)
    assert (error.code, error.message, error.tokens_emitted) == (
        "provider_unavailable", "We are busy; please come back soon.", 0)
    assert job.record.fallback_tier == "static"
    assert (job.record.outcome, job.record.error_code, job.record.finish_reason) == (
        "error", "provider_unavailable", "error")
    assert job.record.incident_id == error.incident_id
    failed = [line for line in own_lines(logs) if line["logger"] == "hello_ship.pipeline"]
    assert [line["event"] for line in failed] == ["provider_failed", "fallback_used"]
    assert fields(failed[0], "route", "error_class", "detail", "status_code", "retryable",
                  "tokens_emitted") == {
        "route": "a/one", "error_class": "AllRoutesFailed",
        "detail": "all routes failed after 1 attempts", "status_code": None,
        "retryable": True, "tokens_emitted": 0}
    assert fields(failed[1], "from_route", "to_route", "tier", "failed_attempts",
                  "incident_id") == {
        "from_route": "a/one", "to_route": None, "tier": "static", "failed_attempts": 1,
        "incident_id": error.incident_id}


async def test_a_pinned_route_failing_is_no_fallback() -> None:
    provider = ScriptedProvider([Fail(ProviderUnavailable("503", status_code=503))],
                                name="a/one")
    job = job_of(one_route(provider), degraded_message="Busy.", pinned=True)
    with captured_logs() as logs:
        [error] = await frames_of(job)
    assert isinstance(error, ErrorFrame) and error.message == "Busy."
    assert [line["event"] for line in own_lines(logs)
            if line["logger"] == "hello_ship.pipeline"] == ["provider_failed"]


async def test_an_answer_broken_off_keeps_its_route_and_standard_copy() -> None:
    provider = ScriptedProvider(["one", " two", Fail(ProviderUnavailable("reset"))],
                                name="a/one")
    job = job_of(one_route(provider), degraded_message="Busy.")
    with captured_logs() as logs:
        frames = await frames_of(job)
    error = frames[-1]
    assert isinstance(error, ErrorFrame) and error.code == "stream_interrupted"
    assert error.message == ERROR_COPY["stream_interrupted"][0]
    assert (job.record.fallback_tier, job.record.attempts) == ("primary", 1)
    [failed] = [line for line in own_lines(logs) if line["event"] == "provider_failed"]
    assert fields(failed, "route", "error_class", "detail", "tokens_emitted") == {
        "route": "a/one", "error_class": "ProviderUnavailable", "detail": "reset",
        "tokens_emitted": 2}
    assert logs.records("fallback_used") == []


async def test_the_route_that_answers_names_the_answer() -> None:
    primary = ScriptedProvider([Fail(ProviderUnavailable("503", status_code=503))],
                               name="a/one")
    fallback = ScriptedProvider([Finish("stop")], name="b/two")
    chain = RouteChain([
        ChainLink(primary, CircuitBreaker("a/one", 5, 60), RateCap(None), "primary"),
        ChainLink(fallback, CircuitBreaker("b/two", 5, 60), RateCap(None), "fallback")],
        RetryPolicy(max_attempts=1))
    job = job_of(chain)
    frames = await frames_of(job)
    assert frames == [MetaFrame("req_test", "b/two"),
                      DoneFrame("stop", Usage(2, 0), "b/two")]
    assert (job.record.model_route, job.record.fallback_tier, job.record.attempts) == (
        "b/two", "fallback", 1)
    assert fallback.requests == [REQUEST]


async def test_the_record_holds_what_the_edge_logs_and_bills() -> None:
    seen: list[StreamRecord] = []

    async def on_terminal(record: StreamRecord) -> None:
        seen.append(record)

    provider = ScriptedProvider([*words("one two"), Finish("length")])
    job = job_of(provider, on_terminal=on_terminal)
    frames = await frames_of(job)
    assert frames[-1] == DoneFrame("length", Usage(2, 2), "fake/scripted")
    assert seen == [job.record]
    assert (job.record.outcome, job.record.usage, job.record.finish_reason) == (
        "ok", Usage(2, 2), "length")
    assert provider.requests == [REQUEST]
    assert job.record.ttft_ms() is not None
    unfinished = await frames_of(job_of(ScriptedProvider(words("no finish"))))
    assert isinstance(unfinished[-1], DoneFrame) and unfinished[-1].finish_reason == "stop"


async def test_the_cuts_say_why_the_answer_ended() -> None:
    with captured_logs() as logs:
        stop = anyio.Event()
        stop.set()
        shutdown = job_of(ScriptedProvider(["one", Sleep(5)]))
        cut = await frames_of(shutdown, stop=stop, stop_grace_s=0.05)
        idle = job_of(ScriptedProvider(["one", Sleep(5)]), idle_timeout_s=0.1)
        idled = await frames_of(idle)
        late = job_of(ScriptedProvider(["one", Sleep(5)]), deadline_s=0.1)
        overdue = await frames_of(late)
    terminals_ = [terminals(frames)[0] for frames in (cut, idled, overdue)]
    assert [(t.code, t.request_id, t.tokens_emitted) for t in terminals_  # type: ignore[union-attr]
            ] == [("shutting_down", "req_test", 1), ("stream_interrupted", "req_test", 1),
                  ("stream_interrupted", "req_test", 1)]
    lines = own_lines(logs)
    [shutdown_line] = [line for line in lines if line["event"] == "shutdown_cut"]
    assert fields(shutdown_line, "model_route", "tokens_emitted") == {
        "model_route": "fake/scripted", "tokens_emitted": 1}
    assert [line["detail"] for line in lines if line["event"] == "provider_failed"] == [
        "no token for 0.1s (IDLE_TIMEOUT_S)", "request deadline of 0.1s passed (REQUEST_TIMEOUT_S)"]
    assert [line["route"] for line in lines if line["event"] == "provider_close_failed"] == []


async def test_a_deadline_passing_before_any_route_answered_is_the_degraded_copy() -> None:
    """The chain keeps to the deadline itself; the pipeline's own cut is its backstop, a
    grace later, and then reads as no route having answered."""
    job = job_of(ScriptedProvider([Sleep(5), "late"], name="a/one"), deadline_s=0.1,
                 degraded_message="Busy.")
    started = time.monotonic()
    with captured_logs() as logs:
        [error] = await frames_of(job)
    assert 1.1 <= time.monotonic() - started < 1.8
    assert isinstance(error, ErrorFrame)
    assert (error.code, error.message, error.retry_after) == ("provider_unavailable", "Busy.",
                                                               None)
    [failed] = logs.records("provider_failed")
    assert failed["detail"] == "request deadline of 0.1s passed (REQUEST_TIMEOUT_S)"
    [used] = logs.records("fallback_used")
    assert (used["failed_attempts"], used["tier"]) == (0, "static")


async def test_a_route_starting_within_the_chains_grace_still_answers() -> None:
    job = job_of(ScriptedProvider([Sleep(0.3), *words("made it")]), deadline_s=0.1)
    frames = await frames_of(job)
    assert text_of(frames) == "made it" and isinstance(frames[-1], DoneFrame)


async def test_an_answer_well_within_its_deadline_and_idle_limit_ends_normally() -> None:
    job = job_of(ScriptedProvider([Sleep(0.3), *words("slow start", delay=0.05)]),
                 deadline_s=2.0, idle_timeout_s=0.2)
    frames = await frames_of(job)
    assert text_of(frames) == "slow start" and isinstance(frames[-1], DoneFrame)


async def test_the_idle_limit_arms_when_the_answer_starts() -> None:
    """No idle limit before the first event (that is the chain's TTFT), and one armed at
    once when the route starts answering, though the timer was asleep meanwhile."""
    job = job_of(ScriptedProvider([Sleep(0.3), "one", Sleep(2), " two"]), idle_timeout_s=0.2)
    started = time.monotonic()
    frames = await frames_of(job)
    assert text_of(frames) == "one" and time.monotonic() - started < 1.5
    assert isinstance(frames[-1], ErrorFrame) and frames[-1].code == "stream_interrupted"


async def test_a_route_whose_first_event_is_not_text_is_answering() -> None:
    """A route answering with its usage first (and then nothing) is held to the idle limit
    from that first event."""
    chain = one_route(ScriptedProvider([Usage(5, 0), Sleep(2), "late"], name="a/one"))
    job = job_of(chain, idle_timeout_s=0.2)
    started = time.monotonic()
    frames = await frames_of(job)
    assert time.monotonic() - started < 1.5
    assert isinstance(frames[-1], ErrorFrame) and frames[-1].code == "provider_unavailable"


async def test_the_deadline_ends_an_answer_that_started_before_it() -> None:
    job = job_of(ScriptedProvider([Sleep(0.05), "one", Sleep(2), " two"]), deadline_s=0.3)
    started = time.monotonic()
    frames = await frames_of(job)
    assert text_of(frames) == "one" and time.monotonic() - started < 0.9
    assert isinstance(frames[-1], ErrorFrame)


async def test_the_timer_keeps_its_beat_while_waiting_for_a_shutdown() -> None:
    frames = await frames_of(job_of(ScriptedProvider([Sleep(0.35), "late"]), heartbeat_s=0.1),
                             stop=anyio.Event(), stop_grace_s=1.0)
    assert sum(isinstance(frame, HeartbeatFrame) for frame in frames) >= 2


async def test_held_text_reaches_the_client_before_the_error_that_ends_the_answer() -> None:
    for script, kwargs in (
            ([*words("Hello there"), Fail(ProviderUnavailable("reset"))], {}),
            ([*words("Hello there"), Sleep(5)], {"idle_timeout_s": 0.1}),
            ([*words("Call me at 555-12"), Sleep(5)], {"idle_timeout_s": 0.1})):
        job = job_of(ScriptedProvider(script), stage=guarded(SECRET), **kwargs)
        frames = await frames_of(job)
        assert isinstance(frames[-1], ErrorFrame)
        # what may be half a value (a number still being written) is not sent
        assert text_of(frames) == ("Call me at " if "Call" in script[0] else "Hello there")
        assert frames[-1].tokens_emitted == 1


async def test_the_timer_still_cuts_after_releasing_held_text() -> None:
    job = job_of(ScriptedProvider(["Hello there", Sleep(2), " friend."]),
                 stage=guarded(SECRET, hold_s=0.1), idle_timeout_s=0.4)
    started = time.monotonic()
    frames = await frames_of(job)
    assert text_of(frames) == "Hello there" and time.monotonic() - started < 1.2
    assert isinstance(frames[-1], ErrorFrame)


async def test_held_text_waits_for_a_reader_that_is_behind() -> None:
    """The timer sends released text only into room: a reader that is behind gets it once it
    has caught up, in order."""
    job = job_of(ScriptedProvider(["Hello there", Sleep(0.5), " friend."]),
                 stage=guarded(SECRET, hold_s=0.1))
    send, receive = anyio.create_memory_object_stream[Frame](1)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            await anyio.sleep(0.3)  # the meta frame fills the buffer
            frames = [frame async for frame in receive]
    assert frames[0] == MetaFrame("req_test", "fake/scripted")
    assert text_of(frames) == "Hello there friend." and isinstance(frames[-1], DoneFrame)


async def test_the_stream_is_counted_while_it_runs_and_its_token_gaps_after() -> None:
    route = "metrics/pipeline-route"
    active = partial(REGISTRY.get_sample_value, "hello_ship_active_streams",
                     {"endpoint": "stream"})
    gaps = partial(REGISTRY.get_sample_value, "hello_ship_inter_token_seconds_sum",
                   {"route": route, "endpoint": "stream"})
    before, gaps_before = active() or 0.0, gaps() or 0.0
    during: list[float | None] = []
    provider = ScriptedProvider(words("one two three", delay=0.05), name=route)
    send, receive = anyio.create_memory_object_stream[Frame](32)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job_of(provider), send)
            async for frame in receive:
                if isinstance(frame, MetaFrame):
                    during.append(active())
    assert during == [before + 1] and active() == before
    assert 0.08 <= (gaps() or 0.0) - gaps_before < 0.5  # two gaps of about 50 ms


async def test_a_failing_cleanup_on_a_cut_is_logged_with_its_route() -> None:
    stop = anyio.Event()
    stop.set()
    waiting = ScriptedProvider(["one", Sleep(5)], release_error=RuntimeError("cleanup broke"))
    flooding = ScriptedProvider(["token"] * 10_000, release_error=RuntimeError("cleanup broke"))
    with captured_logs() as logs:
        cut = await frames_of(job_of(waiting), stop=stop, stop_grace_s=0.05)
        send, receive = anyio.create_memory_object_stream[Frame](4)
        with receive:
            async with anyio.create_task_group() as group:
                group.start_soon(run_pipeline, job_of(flooding), send)
                async for frame in receive:
                    if isinstance(frame, TokenFrame):
                        group.cancel_scope.cancel()
                        break
    assert isinstance(cut[-1], ErrorFrame) and cut[-1].code == "shutting_down"
    closes = [line for line in own_lines(logs) if line["event"] == "provider_close_failed"]
    assert [line["route"] for line in closes] == ["fake/scripted", "fake/scripted"]
    assert all("RuntimeError" in line["exception"] for line in closes)


async def test_a_block_and_a_bug_are_logged_as_such() -> None:
    with captured_logs() as logs:
        blocked = await frames_of(job_of(
            ScriptedProvider(words("Fine here. Forbidden words now.")), stage=guarded(FORBIDDEN)))
        bug = await frames_of(job_of(ScriptedProvider(["one", Fail(RuntimeError("a bug"))])))
    assert [(frame.code, frame.request_id) for frame in (blocked[-1], bug[-1])  # type: ignore[union-attr]
            ] == [("output_blocked", "req_test"), ("internal_error", "req_test")]
    lines = own_lines(logs)
    [block] = [line for line in lines if line["event"] == "output_blocked"]
    assert fields(block, "route", "detector", "category", "tokens_emitted") == {
        "route": "fake/scripted", "detector": "forbidden", "category": "blocked",
        "tokens_emitted": 2}
    [failed] = [line for line in lines if line["event"] == "pipeline_failed"]
    assert failed["route"] == "fake/scripted" and "RuntimeError" in failed["exception"]


async def test_a_request_every_route_refuses_is_not_the_degraded_copy() -> None:
    """A refusal is about the request: the client is told so, not that we are busy."""
    provider = ScriptedProvider([Fail(ProviderRejected("400", status_code=400))], name="a/one")
    job = job_of(one_route(provider), degraded_message="Busy.")
    with captured_logs() as logs:
        [error] = await frames_of(job)
    assert isinstance(error, ErrorFrame)
    assert (error.code, error.message, error.retryable) == (
        "provider_error", ERROR_COPY["provider_error"][0], False)
    assert job.record.fallback_tier is None and logs.records("fallback_used") == []


async def test_a_frame_lost_to_a_cut_is_not_followed_by_later_text() -> None:
    """The relay was cut while waiting to send a sentence to a reader that is behind: that
    sentence is lost, so the text held after it is not sent either (it would leave a gap)."""
    stop = anyio.Event()
    job = job_of(ScriptedProvider(["First sentence. Second part", Sleep(5)]),
                 stage=guarded(SECRET))
    send, receive = anyio.create_memory_object_stream[Frame](1)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(run_pipeline, job, send, stop=stop, stop_grace_s=0.05))
            await anyio.sleep(0.05)  # the meta frame fills the buffer; the relay waits
            stop.set()
            await anyio.sleep(0.2)
            frames = [frame async for frame in receive]
    assert frames[0] == MetaFrame("req_test", "fake/scripted")
    assert text_of(frames) == ""
    assert isinstance(frames[-1], ErrorFrame) and frames[-1].code == "shutting_down"


async def test_held_text_is_released_on_time_after_the_reader_caught_up() -> None:
    """A reader behind once (the relay waited for room) does not stop the hold timer for
    the rest of the answer."""
    provider = ScriptedProvider(["One. ", "Two. ", "Three. ", "And then", Sleep(0.8), " more."])
    job = job_of(provider, stage=guarded(SECRET, hold_s=0.1))
    send, receive = anyio.create_memory_object_stream[Frame](2)
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            await anyio.sleep(0.1)  # behind: the relay waits to send the sentences
            async for frame in receive:
                if isinstance(frame, TokenFrame):
                    arrivals.append((time.monotonic() - started, frame.token))
    assert "".join(token for _, token in arrivals) == "One. Two. Three. And then more."
    [at] = [at for at, token in arrivals if "And" in token]
    assert at < 0.6  # the hold time after the reader caught up, not the provider's silence


async def test_a_quiet_guarded_stream_costs_no_cpu() -> None:
    """While the provider is quiet and the reader is behind, the timer sleeps: it does not
    spin waiting for a release to come due or for room."""
    provider = ScriptedProvider(["Hello there", Sleep(0.4), " friend."])
    job = job_of(provider, stage=guarded(SECRET, hold_s=0.05))
    send, receive = anyio.create_memory_object_stream[Frame](1)
    with receive:
        async with anyio.create_task_group() as group:
            group.start_soon(run_pipeline, job, send)
            await anyio.sleep(0.05)  # the meta frame fills the buffer: no room to release
            used = time.process_time()
            await anyio.sleep(0.25)
            spent = time.process_time() - used
            frames = [frame async for frame in receive]
    assert text_of(frames) == "Hello there friend."
    assert spent < 0.1


async def test_held_text_is_released_at_its_hold_time_when_the_timer_woke_between() -> None:
    """The timer woke for a heartbeat while text was held: it still comes back for the text
    when its hold time is up, not a whole hold time after the heartbeat."""
    provider = ScriptedProvider(["Hello there", Sleep(1.0), " friend."])
    arrivals = await timed_tokens(job_of(provider, stage=guarded(SECRET, hold_s=0.5),
                                         heartbeat_s=0.45))
    assert "".join(token for _, token in arrivals) == "Hello there friend."
    first_at, first = arrivals[0]
    assert first == "Hello " and 0.5 <= first_at < 0.7
