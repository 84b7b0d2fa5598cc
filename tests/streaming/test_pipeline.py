from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from functools import partial

import anyio
import pytest

from guard.detectors import Category, PatternDetector
from guard.policy import GuardPolicy
from guard.scan import Scanner
from providers.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from providers.types import CompletionRequest, Finish, Message, Usage
from streaming.frames import (
    DoneFrame,
    ErrorFrame,
    Frame,
    HeartbeatFrame,
    MetaFrame,
    TokenFrame,
)
from streaming.output_guard import OutputGuard, OutputStage
from streaming.pipeline import ChatJob, run_pipeline
from streaming.record import StreamRecord
from tests.fakes import Fail, ScriptedProvider, Sleep, Step, words

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
    return OutputStage(OutputGuard(Scanner(detectors), GuardPolicy(output_secrets="redact"),
                                   max_chars=400, max_hold_s=hold_s))


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
