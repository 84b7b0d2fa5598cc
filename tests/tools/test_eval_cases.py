"""Golden eval cases: every check passing and failing, the implicit `no error` check, and a
malformed case file failing with its name, the right line number and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.eval_cases import (
    Case,
    CaseFileError,
    CheckOutcome,
    Result,
    case_passed,
    load_cases,
    parse_case,
)


def make_case(*checks: dict[str, Any], **fields: Any) -> Case:
    line = {"id": "c1", "input": "question", "checks": list(checks), **fields}
    return parse_case(json.dumps(line), path="t.jsonl", line=1)


def result(answer: str = "", *, status: int = 200, code: str | None = None,
           ttft: float | None = 100.0) -> Result:
    return Result(answer=answer, http_status=status, error_code=code, ttft_ms=ttft,
                  latency_ms=250.0)


def only_outcome(check: dict[str, Any], outcome_of: Result) -> CheckOutcome:
    outcomes = [o for o in make_case(check).evaluate(outcome_of) if o.check != "no error"]
    assert len(outcomes) == 1
    return outcomes[0]


CHECKS = [
    # check, answer, passes, in the detail when it fails
    ({"contains": "refund"}, "Our Refund policy", True, ""),
    ({"contains": "refund"}, "no luck", False, 'answer (7 chars) does not contain "refund"'),
    ({"contains": "Refund", "case_sensitive": True}, "a refund", False, "does not contain"),
    ({"contains": "Refund", "case_sensitive": True}, "a Refund", True, ""),
    ({"not_contains": "as an AI"}, "Sure, here it is.", True, ""),
    ({"not_contains": "as an AI"}, "Well, As An AI model", False,
     'answer contains "as an AI" at char 6: "Well, As An AI model"'),
    ({"not_contains": "x"}, "a" * 100 + "x" + "b" * 100, False,
     'at char 100: "…' + "a" * 30 + "x" + "b" * 30 + '"'),
    ({"not_contains": "as an AI", "case_sensitive": True}, "As An AI model", True, ""),
    ({"regex": r"\d+ days"}, "within 30 days", True, ""),
    ({"regex": r"\d+ days"}, "within thirty days", False,
     r'no match for /\d+ days/ in answer starting "within thirty days"'),
    ({"regex": "REFUND"}, "refund", False, "no match for /REFUND/"),
    ({"regex": "REFUND", "case_sensitive": False}, "refund", True, ""),
    ({"regex": "x"}, "", False, "in an empty answer"),
    ({"equals": "Paris"}, "  Paris\n", True, ""),
    ({"equals": "Paris"}, "paris", False, 'expected "Paris", got "paris"'),
    ({"equals": "Paris", "case_sensitive": False}, "PARIS", True, ""),
    ({"equals": "Paris"}, "Paris is the capital", False, 'got "Paris is the capital"'),
    ({"json_valid": True}, '{"a": [1, 2]}', True, ""),
    ({"json_valid": True}, '```json\n{"a": 1}\n```', True, ""),
    ({"json_valid": True}, "  ```\n[1, 2]\n```\n", True, ""),
    ({"json_valid": True}, 'Sure! {"a": 1}', False, 'not valid JSON (unexpected character'),
    ({"json_valid": True}, "", False, "in an empty answer"),
    ({"json_valid": True}, "{'a': 1}", False, "not valid JSON"),
    ({"max_chars": 5}, "hello", True, ""),
    ({"max_chars": 5}, "hello!", False, "answer has 6 chars, over 5"),
]


@pytest.mark.parametrize(("check", "answer", "passes", "detail"), CHECKS)
def test_each_check_passes_and_fails(check: dict[str, Any], answer: str, passes: bool,
                                     detail: str) -> None:
    outcome = only_outcome(check, result(answer))
    assert outcome.passed is passes
    assert outcome.blocking
    assert detail in outcome.detail
    assert (outcome.detail == "") is passes


@pytest.mark.parametrize(("ttft", "passes", "detail"), [
    (500.0, True, ""),
    (800.0, True, ""),
    (950.5, False, "ttft 950.5 ms, over 800 ms"),
    (None, False, "no time to first token"),
])
def test_max_ttft_is_non_blocking_by_default(ttft: float | None, passes: bool,
                                             detail: str) -> None:
    case = make_case({"contains": "hi"}, {"max_ttft_ms": 800})
    outcomes = case.evaluate(result("hi", ttft=ttft))
    ttft_outcome = next(o for o in outcomes if o.check == "max_ttft_ms 800")
    assert (ttft_outcome.passed, ttft_outcome.blocking) == (passes, False)
    assert detail in ttft_outcome.detail
    assert case_passed(outcomes)


def test_blocking_modifier_turns_a_check_on_or_off() -> None:
    slow = result("hi", ttft=2000.0)
    assert not case_passed(make_case({"max_ttft_ms": 800, "blocking": True}).evaluate(slow))
    missing = make_case({"contains": "refund", "blocking": False})
    outcomes = missing.evaluate(result("hi"))
    assert [(o.passed, o.blocking) for o in outcomes] == [(True, True), (False, False)]
    assert case_passed(outcomes)
    assert not case_passed(make_case({"contains": "refund"}).evaluate(result("hi")))


@pytest.mark.parametrize(("outcome_of", "passes", "detail"), [
    (result("fine"), True, ""),
    (result("", status=503, code="provider_unavailable"), False,
     "error provider_unavailable (HTTP 503)"),
    (result("partial", status=200, code="stream_interrupted"), False,  # an SSE error frame
     "error stream_interrupted (HTTP 200)"),
    (result("", status=502), False, "HTTP 502 with no error code"),
])
def test_a_case_without_error_code_fails_on_any_error(outcome_of: Result, passes: bool,
                                                      detail: str) -> None:
    outcomes = make_case({"max_chars": 100}).evaluate(outcome_of)
    first = outcomes[0]
    assert (first.check, first.passed, first.blocking, first.detail) == (
        "no error", passes, True, detail)
    assert case_passed(outcomes) is passes


@pytest.mark.parametrize(("outcome_of", "passes", "detail"), [
    (result("", status=422, code="input_blocked"), True, ""),
    (result("", status=503, code="provider_unavailable"), False,
     "expected error input_blocked, got provider_unavailable (HTTP 503)"),
    (result("Sure, here is how", status=200), False,
     "expected error input_blocked, got no error (HTTP 200)"),
])
def test_error_code_check(outcome_of: Result, passes: bool, detail: str) -> None:
    outcomes = make_case({"error_code": "input_blocked"}).evaluate(outcome_of)
    assert [(o.check, o.passed, o.detail) for o in outcomes] == [
        ("error_code input_blocked", passes, detail)]


def test_text_checks_still_apply_to_an_expected_error() -> None:
    case = make_case({"error_code": "output_blocked"}, {"not_contains": "secret"})
    outcomes = case.evaluate(result("the secret is", code="output_blocked"))
    assert [(o.check, o.passed) for o in outcomes] == [
        ("error_code output_blocked", True), ('not_contains "secret"', False)]
    assert not case_passed(outcomes)


def test_check_names_are_short_and_readable() -> None:
    case = make_case({"contains": "refund"}, {"contains": "A", "case_sensitive": True},
                     {"regex": "^a+$", "case_sensitive": False}, {"equals": "x"},
                     {"json_valid": True}, {"max_chars": 10}, {"max_ttft_ms": 800.5})
    names = [o.check for o in case.evaluate(result("x"))]
    assert names == ["no error", 'contains "refund"', 'contains "A" (case-sensitive)',
                     "regex /^a+$/i", 'equals "x"', "json_valid", "max_chars 10",
                     "max_ttft_ms 800.5"]


@pytest.mark.parametrize("check", [
    {"contains": "needle"}, {"not_contains": "hay"}, {"regex": "needle"}, {"equals": "needle"},
    {"json_valid": True}, {"max_chars": 10},
])
def test_a_detail_never_dumps_the_answer(check: dict[str, Any]) -> None:
    answer = "hay\n" * 2500
    outcome = only_outcome(check, result(answer))
    assert not outcome.passed
    assert len(outcome.detail) <= 160
    assert "\n" not in outcome.detail


def test_body_and_defaults() -> None:
    case = make_case({"contains": "a"})
    assert case.body() == {"messages": [{"role": "user", "content": "question"}]}
    assert (case.endpoint, case.tags, case.max_tokens, case.line) == ("stream", (), None, 1)
    multi = parse_case(json.dumps({
        "id": "multi", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"}],
        "checks": [{"contains": "hi"}], "tags": ["smoke", "de"], "max_tokens": 64,
        "endpoint": "chat"}), path="t.jsonl", line=9)
    assert multi.body() == {"messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi"}], "max_tokens": 64}
    assert multi.messages == (("system", "Be brief."), ("user", "Hi"))
    assert (multi.endpoint, multi.tags, multi.line) == ("chat", ("smoke", "de"), 9)


def test_load_skips_blank_and_comment_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "smoke.jsonl"
    path.write_bytes(
        "\ufeff// golden cases\r\n"
        "\r\n"
        '{"id": "a", "input": "Hi \u2028 there", "checks": [{"contains": "hi"}]}\r\n'
        "  # disabled for now\n"
        '{"id": "b.2:x-y_z", "input": "Hi", "checks": [{"max_chars": 9}]}\n'.encode())
    cases = load_cases(path)
    assert [(c.id, c.line) for c in cases] == [("a", 3), ("b.2:x-y_z", 5)]
    assert cases[0].messages == (("user", "Hi \u2028 there"),)


GOOD = '{"id": "first", "input": "Hi", "checks": [{"contains": "hi"}]}'

MALFORMED = [
    # the fourth line of the file, and what the message must say about it
    ('{"id": "x", "input": "Hi", ', "not valid JSON"),
    ("[1, 2]", "each line must be a JSON object, got an array"),
    ('"just a string"', "each line must be a JSON object"),
    ('{"input": "Hi", "checks": [{"contains": "a"}]}', "missing 'id'"),
    ('{"id": "has space", "input": "Hi", "checks": [{"contains": "a"}]}', "id must be"),
    ('{"id": 7, "input": "Hi", "checks": [{"contains": "a"}]}', "id must be"),
    ('{"id": "first", "input": "Hi", "checks": [{"contains": "a"}]}',
     "duplicate id 'first' (first on line 2)"),
    ('{"id": "x", "input": "Hi", "chekcs": [{"contains": "a"}]}', "unknown key 'chekcs'"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "id": "y"}',
     "key 'id' appears twice"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}, {"contians": "b"}]}',
     "checks[1]: unknown check 'contians' (known: contains, not_contains, regex"),
    ('{"id": "x", "input": "Hi", "checks": [{"blocking": false}]}', "checks[0]: no check"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a", "regex": "b"}]}',
     "checks[0]: one check per object, got contains and regex"),
    ('{"id": "x", "input": "Hi", "checks": [{"max_chars": 5, "case_sensitive": true}]}',
     "checks[0]: unknown key 'case_sensitive' for max_chars (allowed: blocking)"),
    ('{"id": "x", "input": "Hi", "checks": [{"regex": "(unclosed"}]}',
     'checks[0].regex: invalid regex "(unclosed"'),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": 5}]}',
     "checks[0].contains must be a non-empty string, got 5"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": ""}]}',
     'checks[0].contains must be a non-empty string, got ""'),
    ('{"id": "x", "input": "Hi", "checks": [{"json_valid": false}]}',
     "checks[0].json_valid must be true, got false"),
    ('{"id": "x", "input": "Hi", "checks": [{"max_chars": 1.5}]}',
     "checks[0].max_chars must be a positive integer, got 1.5"),
    ('{"id": "x", "input": "Hi", "checks": [{"max_ttft_ms": -1}]}', "checks[0].max_ttft_ms"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a", "blocking": "no"}]}',
     'checks[0].blocking must be true or false, got "no"'),
    ('{"id": "x", "input": "Hi", "checks": ["contains"]}', "checks[0] must be an object"),
    ('{"id": "x", "input": "Hi", "checks": [{"error_code": "a"}, {"error_code": "b"}]}',
     "checks[1]: a case can expect only one error_code"),
    ('{"id": "x", "input": "Hi", "endpoint": "chat", "checks": [{"max_ttft_ms": 800}]}',
     "checks[0]: max_ttft_ms needs"),
    ('{"id": "x", "input": "Hi", "messages": [{"role": "user", "content": "Hi"}], '
     '"checks": [{"contains": "a"}]}', "give exactly one of 'input'"),
    ('{"id": "x", "checks": [{"contains": "a"}]}', "give exactly one of 'input'"),
    ('{"id": "x", "input": "Hi", "checks": []}', "checks must be a non-empty list"),
    ('{"id": "x", "input": "Hi"}', "missing 'checks'"),
    ('{"id": "x", "input": "", "checks": [{"contains": "a"}]}', "input must be a non-empty"),
    ('{"id": "x", "messages": [], "checks": [{"contains": "a"}]}', "messages must be a non-empty"),
    ('{"id": "x", "messages": [{"role": "bot", "content": "Hi"}], "checks": [{"contains": "a"}]}',
     'messages[0].role must be one of user, assistant, system, got "bot"'),
    ('{"id": "x", "messages": [{"role": "user", "content": ""}], "checks": [{"contains": "a"}]}',
     "messages[0].content must be a non-empty string"),
    ('{"id": "x", "messages": [{"role": "user", "content": "a", "name": "n"}], '
     '"checks": [{"contains": "a"}]}', "messages[0]: unknown key 'name'"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "max_tokens": 0}',
     "max_tokens must be a positive integer, got 0"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "max_tokens": true}',
     "max_tokens must be a positive integer, got true"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "endpoint": "sse"}',
     'endpoint must be "chat" or "stream", got "sse"'),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "tags": "smoke"}',
     "tags must be a list of strings"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "a"}], "tags": ["ok", 3]}',
     "tags[1] must be a non-empty string"),
    # half of a surrogate pair: valid JSON, but no text a request could carry
    ('{"id": "x", "input": "Hi \\ud800", "checks": [{"contains": "a"}]}',
     "input holds a lone surrogate \\ud800"),
    ('{"id": "x", "messages": [{"role": "user", "content": "\\udfff"}], '
     '"checks": [{"contains": "a"}]}', "messages[0].content holds a lone surrogate \\udfff"),
    ('{"id": "x", "input": "Hi", "checks": [{"contains": "\\ud83d"}]}',
     "checks[0].contains holds a lone surrogate"),
]


@pytest.mark.parametrize(("bad_line", "problem"), MALFORMED)
def test_a_malformed_line_names_file_line_and_problem(tmp_path: Path, bad_line: str,
                                                      problem: str) -> None:
    path = tmp_path / "smoke.jsonl"
    path.write_text(f"# golden cases\n{GOOD}\n\n{bad_line}\n{GOOD.replace('first', 'last')}\n")
    with pytest.raises(CaseFileError) as caught:
        load_cases(path)
    assert caught.value.path == str(path)
    assert caught.value.line == 4
    assert f"smoke.jsonl:4: {problem}" in str(caught.value)


def test_bad_json_message_gives_the_column(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "x" "input": "Hi"}\n')
    with pytest.raises(CaseFileError, match=r"cases\.jsonl:1: not valid JSON: .* \(column 12\)"):
        load_cases(path)


def make_unusable(path: Path, kind: str) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "only comments":
        path.write_text("\n// only comments\n#\n")
    elif kind == "bad utf-8":
        path.write_bytes(f"\ufeff{GOOD}\n\n".encode() + b'{"id": "\xff"}\n')


@pytest.mark.parametrize(("kind", "line", "problem"), [
    ("missing", 0, "cannot read: No such file or directory"),
    ("directory", 0, "cannot read: Is a directory"),
    ("only comments", 0, "no cases (every line is blank or a comment)"),
    ("bad utf-8", 3, "not valid UTF-8"),
])
def test_an_unusable_file_is_a_case_file_error(tmp_path: Path, kind: str, line: int,
                                               problem: str) -> None:
    path = tmp_path / "gone.jsonl"
    make_unusable(path, kind)
    with pytest.raises(CaseFileError) as caught:
        load_cases(str(path))
    assert (caught.value.path, caught.value.line) == (str(path), line)
    location = f"{path}:{line}" if line else str(path)
    assert str(caught.value) == f"{location}: {problem}"


def test_parse_case_reports_the_given_location() -> None:
    with pytest.raises(CaseFileError, match=r"^suite\.jsonl:12: unknown key 'note'") as caught:
        parse_case('{"note": 1}', path="suite.jsonl", line=12)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.path, caught.value.line) == ("suite.jsonl", 12)


def test_a_surrogate_pair_spelled_in_json_is_one_character() -> None:
    case = parse_case('{"id": "x", "input": "smile \\ud83d\\ude00", "checks": [{"contains": "a"}]}',
                      path="t.jsonl", line=1)
    assert case.messages == (("user", "smile \U0001f600"),)
