"""`hello-ship eval` against a service that answers badly: every malformed answer fails its own
row as `malformed_response`, a 429 is retried, an answer from another route than the pinned one
fails, and nothing the service sends, and no flag, ends the run in a traceback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.eval_fakes import ROUTE, FakeService, good_stream, hello_ship, sse
from tests.servers import thread_server

TOKEN = sse({"type": "token", "token": "hello"})
DONE = sse({"type": "done", "usage": {"input_tokens": 1, "output_tokens": 1}})
# input text -> the stream the fake sends for it; each must fail its row, and only its row
BAD_STREAMS: dict[str, list[bytes]] = {
    "usage-list": [TOKEN, sse({"type": "done", "usage": [1]})],
    "usage-count-text": [TOKEN, sse({"type": "done", "usage": {"input_tokens": "3"}})],
    "error-code-object": [TOKEN, sse({"type": "error", "code": {}})],
    "error-code-list": [TOKEN, sse({"type": "error", "code": ["unauthorized"]})],
    "error-without-code": [TOKEN, sse({"type": "error", "message": "boom"})],
    "token-after-done": [TOKEN, DONE, sse({"type": "token", "token": " more"})],
    "done-after-error": [TOKEN, sse({"type": "error", "code": "stream_interrupted"}), DONE],
    "frame-a-list": [b"data: [1, 2]\n\n", TOKEN, DONE],
    "frame-not-json": [TOKEN, b"event: error\ndata: not json\n\n"],
    "meta-route-list": [sse({"type": "meta", "model_route": ["a"]}), TOKEN, DONE],
    "token-not-text": [sse({"type": "token", "token": 5}), DONE],
    "unknown-type": [TOKEN, sse({"type": "mystery"}), DONE],
    "event-disagrees": [sse({"type": "token", "token": "hello"}, event="done"), DONE],
}
BAD_CHATS: dict[str, bytes] = {
    "chat-usage-text": orjson.dumps({"answer": "hello", "usage": "x", "model_route": ROUTE}),
    "chat-answer-number": orjson.dumps({"answer": 5, "usage": {}, "model_route": ROUTE}),
    "chat-route-list": orjson.dumps({"answer": "hello", "usage": {}, "model_route": ["a"]}),
    "chat-not-object": b"[1]",
}
# Well-formed, though unlike what the service itself sends: these must pass.
GOOD_STREAMS: dict[str, list[bytes]] = {
    "no-space-after-colon": [b'event:meta\ndata:{"type":"meta","model_route":"fake/one"}\n\n',
                             b'event:token\ndata:{"type":"token","token":"hello"}\n\n',
                             b'data:{"type":"done","usage":{"input_tokens":1,'
                             b'"output_tokens":1}}\n\n'],
    "crlf-line-ends": [chunk.replace(b"\n", b"\r\n") for chunk in good_stream()],
}


def case_line(text: str, endpoint: str = "stream") -> str:
    return orjson.dumps({"id": text, "input": text, "endpoint": endpoint,
                         "checks": [{"contains": "hello"}]}).decode()


def write_cases(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(report: Path) -> dict[str, dict[str, Any]]:
    return {row["case"]: row for row in orjson.loads(report.read_bytes())["results"]}


def test_each_malformed_answer_fails_its_own_row_and_the_rest_still_pass(
        tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl",
                        *(case_line(text) for text in (*BAD_STREAMS, *GOOD_STREAMS, "fine")),
                        *(case_line(text, "chat") for text in (*BAD_CHATS, "fine-chat")))
    report = tmp_path / "report.json"
    fake = FakeService(streams={**BAD_STREAMS, **GOOD_STREAMS}, chats=BAD_CHATS)
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--report", str(report))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    rows = rows_of(report)
    for text in (*BAD_STREAMS, *BAD_CHATS):
        assert rows[text]["error_code"] == "malformed_response", text
        assert rows[text]["error_detail"] and not rows[text]["passed"], text
    for text in (*GOOD_STREAMS, "fine", "fine-chat"):
        assert rows[text]["passed"], rows[text]
    assert rows["token-after-done"]["error_detail"] == "a token frame after the done frame"
    assert "error malformed_response: an error frame whose code is missing" in run.stdout


def test_a_request_retried_after_a_rate_limit_passes_when_the_retry_answers(
        tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("first"), case_line("second"))
    report = tmp_path / "report.json"
    fake = FakeService(rate_limited_first=2)
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--report", str(report))
    assert run.returncode == 0, run.stdout + run.stderr
    assert fake.seen == {"first": 3, "second": 3}  # twice refused, then answered
    rows = rows_of(report)
    assert all(row["passed"] and row["http_status"] == 200 and row["error_code"] is None
               for row in rows.values())


def test_an_answer_from_another_route_than_the_pinned_one_fails(tmp_path: Path) -> None:
    """A proxy that strips X-Route, or a deploy that ignores it: the primary answers for
    every route, so without this check each fallback would pass on the primary's answers."""
    cases = write_cases(tmp_path / "cases.jsonl", case_line("hi"), case_line("hi-chat", "chat"))
    report = tmp_path / "report.json"
    fake = FakeService(routes=({"route": ROUTE}, {"route": "fake/fallback"}))
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--report", str(report))
    assert run.returncode == 1
    assert fake.pinned.count("fake/fallback") == 2  # it was asked for the fallback
    assert "ok    fake/one: 2/2 passed" in run.stdout
    assert ("fail  hi (line 1): answered_by: answered by fake/one, not the pinned "
            "fake/fallback") in run.stdout
    rates = {route: entry["pass_rate"]
             for route, entry in orjson.loads(report.read_bytes())["routes"].items()}
    assert rates == {"fake/one": 1.0, "fake/fallback": 0.0}


def test_an_expected_refusal_names_no_route_and_still_passes_a_pinned_row(
        tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", orjson.dumps(
        {"id": "refused", "input": "refused", "checks": [{"error_code": "input_blocked"}]}
    ).decode())
    refusal = [sse({"type": "error", "code": "input_blocked", "message": "No."})]
    with thread_server(FakeService(streams={"refused": refusal}).app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url)
    assert run.returncode == 0, run.stdout


def test_a_slow_ready_body_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("hi"))
    with thread_server(FakeService(trickle=frozenset({"/ready"})).app()) as live:
        started = time.monotonic()
        run = hello_ship("eval", str(cases), "--url", live.url, "--timeout", "1")
    assert run.returncode == 2 and time.monotonic() - started < 10
    assert "GET /ready did not answer within 1 s" in run.stderr


@pytest.mark.parametrize(("flag", "value"), [
    ("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "-1"), ("--timeout", "0"),
    ("--threshold", "nan"), ("--threshold", "1.5"), ("--threshold", "-0.1"),
    ("--concurrency", "0"), ("--concurrency", "2.5"), ("--concurrency", "100000"),
])
def test_an_out_of_range_flag_is_a_usage_error(tmp_path: Path, flag: str, value: str) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("hi"))
    run = hello_ship("eval", str(cases), "--url", "http://127.0.0.1:9", f"{flag}={value}")
    assert run.returncode == 2
    assert f"argument {flag}: must be" in run.stderr and "Traceback" not in run.stderr


def test_an_unexpected_fault_of_the_runner_is_one_line_and_exit_status_2(
        tmp_path: Path) -> None:
    # A route name no HTTP header can carry: nothing in the runner expects this one.
    cases = write_cases(tmp_path / "cases.jsonl", case_line("hi"))
    with thread_server(FakeService().app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--route", "fake/ünï")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith("hello-ship: eval: stopped by an unexpected error: ")
    assert "not a failed case" in line


def test_a_price_file_the_service_would_refuse_stops_the_run(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("hi"))
    config = tmp_path / "hello-ship.toml"
    config.write_text('[prices."openai/gpt-4o-mini"]\ninput = 1.0\n')
    run = hello_ship("eval", str(cases), "--url", "http://127.0.0.1:9", "--config",
                     str(config))
    assert run.returncode == 2
    assert "prices.'openai/gpt-4o-mini'" in run.stderr
    assert "needs exactly input and output" in run.stderr


def test_a_retried_row_times_the_answer_it_is_judged_on_not_the_wait(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("slow-down"),
                        case_line("slow-down-chat", "chat"))
    report = tmp_path / "report.json"
    fake = FakeService(rate_limited_first=1, retry_after="1.5")  # /chat/stream only
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--report", str(report))
    assert run.returncode == 0, run.stdout + run.stderr
    assert fake.seen == {"slow-down": 2, "slow-down-chat": 1}  # refused once, waited 1.5 s
    row = rows_of(report)["slow-down"]
    assert row["ttft_ms"] is not None and row["ttft_ms"] < 1000, row
    assert row["latency_ms"] < 1000, row


def test_a_refused_key_stops_the_run_at_its_first_refusal(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl",
                        *(case_line(f"case-{n}", "chat" if n % 2 else "stream")
                          for n in range(6)))
    report = tmp_path / "report.json"
    fake = FakeService(routes=tuple({"route": f"fake/{n}"} for n in range(3)),
                       refusal=(403, "route_pin_forbidden"))
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--key", "tenant-key",
                         "--concurrency", "2", "--report", str(report))
    assert run.returncode == 2, run.stdout + run.stderr
    assert 1 <= len(fake.pinned) <= 2  # not 6 cases x 3 routes: the first refusal stopped it
    (line,) = run.stderr.splitlines()
    assert line == ("hello-ship: eval: fake/0: evaluating routes one by one takes an admin "
                    "key (--key), or --route chain")
    stopped = orjson.loads(report.read_bytes())
    assert stopped["passed"] is False and "takes an admin key" in stopped["error"]
    assert 1 <= len(stopped["results"]) <= 2
    assert {row["error_code"] for row in stopped["results"]} == {"route_pin_forbidden"}


def test_a_row_retried_until_its_time_ran_out_reports_the_whole_request(
        tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", case_line("never"))
    report = tmp_path / "report.json"
    fake = FakeService(rate_limited_first=1000, retry_after="0.3")
    with thread_server(fake.app()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--timeout", "1.5",
                         "--report", str(report))
    assert run.returncode == 1, run.stdout + run.stderr
    row = rows_of(report)["never"]
    assert row["error_code"] == "client_timeout" and fake.seen["never"] > 1
    assert 1400 <= row["latency_ms"] < 3000, row  # the timeout's, not the last attempt's
