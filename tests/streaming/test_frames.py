import re

import orjson
import pytest

from providers.types import Usage
from streaming.failures import ERROR_COPY, error_frame
from streaming.frames import (
    HEARTBEAT,
    DoneFrame,
    ErrorFrame,
    MetaFrame,
    SSEEncoder,
    TokenFrame,
    sse_retry,
)
from tests.sse import parse_sse


def test_frames_are_numbered_typed_single_line_json() -> None:
    encoder = SSEEncoder()
    wire = b"".join([
        encoder.encode(MetaFrame("req_1", "demo/hello-1")),
        encoder.encode(TokenFrame("line one\nline \"two\"\r\n")),
        encoder.encode(HEARTBEAT),
        encoder.encode(DoneFrame("stop", Usage(3, 4), "demo/hello-1")),
    ]).decode()
    items = parse_sse(wire)
    events = [item for item in items if item.is_event]
    assert [e.id for e in events] == ["0", "1", "2"]
    assert [e.event for e in events] == ["meta", "token", "done"]
    assert all(e.data["type"] == e.event for e in events)
    assert all(len(e.data_lines) == 1 for e in events)
    assert events[1].data["token"] == "line one\nline \"two\"\r\n"
    assert events[2].data == {"type": "done", "finish_reason": "stop",
                              "usage": {"input_tokens": 3, "output_tokens": 4},
                              "model_route": "demo/hello-1"}
    assert [item.comments for item in items if not item.is_event] == [["heartbeat"]]


def test_error_frame_carries_the_contract_fields() -> None:
    frame = ErrorFrame(code="stream_interrupted", message="m", request_id="req_1",
                       incident_id="inc_1", tokens_emitted=7, retryable=True)
    data = orjson.loads(SSEEncoder().encode(frame).split(b"data: ")[1])
    assert data == {"type": "error", "code": "stream_interrupted", "message": "m",
                    "request_id": "req_1", "incident_id": "inc_1", "tokens_emitted": 7,
                    "retryable": True}


def test_meta_names_the_request_and_the_route() -> None:
    data = orjson.loads(SSEEncoder().encode(MetaFrame("req_1", "demo/hello-1"))
                        .split(b"data: ")[1])
    assert data == {"type": "meta", "request_id": "req_1", "model_route": "demo/hello-1"}


def test_an_error_frame_says_when_to_retry_when_it_knows() -> None:
    frame = ErrorFrame(code="provider_unavailable", message="m", request_id="req_1",
                       incident_id="inc_1", tokens_emitted=0, retryable=True, retry_after=30.0)
    (item,) = parse_sse(SSEEncoder().encode(frame).decode())
    assert item.data["retry_after"] == 30.0
    assert item.data["retryable"] is True


def test_the_retry_line_tells_event_source_clients_how_long_to_wait() -> None:
    assert sse_retry(3000) == b"retry: 3000\n\n"
    (item,) = parse_sse(sse_retry(1500).decode())
    assert item.retry == 1500 and not item.is_event


@pytest.mark.parametrize(("code", "retryable"), [
    ("provider_unavailable", True), ("provider_error", False), ("stream_interrupted", True),
    ("output_blocked", False), ("shutting_down", True), ("internal_error", True),
])
def test_each_error_code_has_its_copy_and_says_whether_to_retry(code: str,
                                                                retryable: bool) -> None:
    frame = error_frame(code, request_id="req_1", tokens_emitted=3)
    assert (frame.code, frame.message, frame.retryable) == (code, ERROR_COPY[code][0], retryable)
    assert (frame.request_id, frame.tokens_emitted, frame.retry_after) == ("req_1", 3, None)
    assert re.fullmatch(r"inc_[0-9a-f]{16}", frame.incident_id)
    assert frame.incident_id != error_frame(code, request_id="req_1",
                                            tokens_emitted=3).incident_id
    custom = error_frame(code, request_id="req_1", tokens_emitted=0, retry_after=5.0,
                         message="We are busy; please come back soon.")
    assert (custom.message, custom.retry_after) == ("We are busy; please come back soon.", 5.0)
