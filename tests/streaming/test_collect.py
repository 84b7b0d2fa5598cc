"""The non-streaming endpoint's answer, collected from the frames; the stream's record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.types import Usage
from streaming.collect import CollectedAnswer, collect_answer
from streaming.frames import HEARTBEAT, DoneFrame, ErrorFrame, Frame, MetaFrame, TokenFrame
from streaming.record import StreamRecord

DONE = DoneFrame("stop", Usage(3, 2), "demo/hello-1")
ERROR = ErrorFrame(code="stream_interrupted", message="m", request_id="req_1",
                   incident_id="inc_1", tokens_emitted=2, retryable=True)


async def stream(*frames: Frame) -> AsyncIterator[Frame]:
    for frame in frames:
        yield frame


@pytest.mark.parametrize(("frames", "answer"), [
    ([MetaFrame("req_1", "demo/hello-1"), TokenFrame("Hel"), HEARTBEAT, TokenFrame("lo"), DONE],
     CollectedAnswer("Hello", DONE)),
    ([MetaFrame("req_1", "demo/hello-1"), TokenFrame("Hel"), TokenFrame("l"), ERROR],
     CollectedAnswer("Hell", ERROR)),
    ([ERROR], CollectedAnswer("", ERROR)),
])
async def test_the_answer_is_the_tokens_joined_and_the_terminal_frame(
        frames: list[Frame], answer: CollectedAnswer) -> None:
    assert await collect_answer(stream(*frames)) == answer


async def test_a_stream_without_a_terminal_frame_is_a_bug() -> None:
    with pytest.raises(RuntimeError) as failed:
        await collect_answer(stream(MetaFrame("req_1", "demo/hello-1"), TokenFrame("Hi")))
    assert str(failed.value) == "the pipeline ended without a terminal frame"


def test_time_to_first_token_in_milliseconds() -> None:
    record = StreamRecord(started_at=100.0)
    assert record.ttft_ms() is None
    record.first_token_at = 100.12345
    assert record.ttft_ms() == 123.5
