import orjson

from providers.types import Usage
from streaming.frames import (
    HEARTBEAT,
    DoneFrame,
    ErrorFrame,
    MetaFrame,
    SSEEncoder,
    TokenFrame,
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
