from __future__ import annotations

import io
import logging
import threading
import time

import orjson

from telemetry import trace_context
from telemetry.jsonlog import (
    JsonFormatter,
    configure_logging,
    describe_exception,
    flush_logs,
    stamp_request_context,
)

# Built at run time, as secrets are: stack frames show source lines, which is fine.
KEY = "-".join(["sk", "live", "secret"])
PROMPT = " ".join(["my card", "4111"] + ["1111"] * 3)


def failing() -> None:
    try:
        raise KeyError(f"{KEY} in the first error")
    except KeyError as exc:
        raise RuntimeError(f"prompt was: {PROMPT}") from exc


def test_exceptions_are_logged_as_types_and_frames_without_messages() -> None:
    try:
        failing()
    except RuntimeError as exc:
        text = describe_exception(exc)
    assert "sk-live" not in text and "4111" not in text
    assert "builtins.KeyError" in text and "builtins.RuntimeError" in text
    assert text.index("KeyError") < text.index("RuntimeError")  # cause first, like Python
    assert "in failing" in text


def test_a_record_becomes_one_json_line_with_context_and_extras() -> None:
    stamp_request_context()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    token = trace_context.current.set(trace_context.RequestContext("req_x", "abc", 0.0))
    try:
        try:
            failing()
        except RuntimeError:
            logger.exception("boom", extra={"route": "demo/hello-1", "attempt": 2})
    finally:
        trace_context.current.reset(token)
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["event"] == "boom" and record["level"] == "error"
    assert record["request_id"] == "req_x" and record["trace_id"] == "abc"
    assert record["route"] == "demo/hello-1" and record["attempt"] == 2
    assert isinstance(record["pid"], int)
    assert "RuntimeError" in record["exception"] and "4111" not in line


def test_flushing_loses_no_line_logged_meanwhile_from_another_thread() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("INFO", stream)
    logger = logging.getLogger("tests.flush")
    stop = threading.Event()
    sent = 0

    def chatter() -> None:
        nonlocal sent
        while not stop.is_set():
            logger.info("line", extra={"n": sent})
            sent += 1

    worker = threading.Thread(target=chatter)
    try:
        worker.start()
        while sent < 2000:
            time.sleep(0.001)
        flush_logs()  # switches to direct writes while the thread keeps logging
        time.sleep(0.02)
        stop.set()
        worker.join()
    finally:
        root.handlers, level = saved
        root.setLevel(level)
    numbers = [orjson.loads(line)["n"] for line in stream.getvalue().splitlines()
               if '"tests.flush"' in line]
    assert sorted(numbers) == list(range(sent))


def test_pii_and_secrets_that_slip_into_a_line_are_scrubbed() -> None:
    """The last line of defence: a library's warning quoting a key or a user's address."""
    key = "sk-proj-" + "Zq8sK2mX9vL4nR7tW1yB3cD5"
    record = logging.LogRecord("tests.jsonlog", logging.WARNING, __file__, 1,
                               "retrying with key %s", (key,), None)
    record.detail = "reply to jane.doe@example.com about 4111 1111 1111 1111"
    record.count = 4111111111111111  # numbers are the service's own fields, left alone
    record.nested = {"to": ["jane.doe@example.com"], "jane.doe@example.com": 1}
    record.request_id = key  # a client may choose its own request id, even a key
    line = orjson.loads(JsonFormatter().format(record))
    assert line["event"] == "retrying with key [redacted:api_key]"
    assert line["detail"] == ("reply to [redacted:email] about [redacted:credit_card]")
    assert line["count"] == 4111111111111111
    assert line["nested"] == {"to": ["[redacted:email]"], "[redacted:email]": 1}
    assert line["request_id"] == "[redacted:api_key]"
    unscrubbed = orjson.loads(JsonFormatter(scrub=False).format(record))
    assert key in unscrubbed["event"]


def test_values_glued_to_other_scripts_or_hidden_by_invisible_characters_are_scrubbed() -> None:
    key = "sk-proj-" + "Zq8sK2mX9vL4nR7tW1yB3cD5"
    record = logging.LogRecord("tests.jsonlog", logging.WARNING, __file__, 1,
                               "密钥%s已过期", (key,), None)
    record.detail = ("请联系jane.doe@example.com\uff0c"
                     "卡号41\u200b11\u00a01111\u00a01111\u00a01111谢谢")
    line = JsonFormatter().format(record)
    assert key not in line and "jane.doe" not in line and "1111" not in line
    assert orjson.loads(line)["event"] == "密钥[redacted:api_key]已过期"
