"""The eval report: pass rates printed so a miss never reads as the threshold, a pinned row
failing when another route answered, and a run with nothing evaluated never passing."""

from __future__ import annotations

import io

import orjson
import pytest

from tools.eval_cases import Result, parse_case
from tools.eval_report import CaseRun, Report, answered_by, percentages

CASE = parse_case('{"id": "x", "input": "hi", "checks": [{"contains": "hello"}]}',
                  path="t.jsonl", line=1)


def run_of(answer: str, *, route: str | None = "r/1", model_route: str | None = "r/1",
           code: str | None = None) -> CaseRun:
    result = Result(answer, 200, code, 1.0, 2.0, model_route=model_route)
    return CaseRun.judged(CASE, route, result, 1, 1, None)


def summary(report: Report, threshold: float) -> tuple[bool, str]:
    out = io.StringIO()
    ok = report.write_summary(out, threshold)
    return ok, out.getvalue().splitlines()[0]


@pytest.mark.parametrize(("passed", "total", "threshold", "shown"), [
    (1999, 2000, 1.0, "(99.95%, threshold 100.00%)"),
    (2, 3, 0.6667, "(66.667%, threshold 66.670%)"),
    (999, 1000, 0.9995, "(99.90%, threshold 99.95%)"),
    (7, 10, 0.7, "(70.0%, threshold 70.0%)"),
    (5, 5, 1.0, "(100.0%, threshold 100.0%)"),
])
def test_a_pass_rate_below_the_threshold_never_prints_equal_to_it(
        passed: int, total: int, threshold: float, shown: str) -> None:
    report = Report([run_of("hello" if index < passed else "nope") for index in range(total)])
    ok, line = summary(report, threshold)
    assert ok is (passed / total >= threshold)
    assert line.startswith("ok  " if ok else "FAIL") and line.endswith(shown)


def test_percentages_differ_whenever_the_numbers_do() -> None:
    for rate, threshold in [(0.99949, 0.9995), (0.9999989, 0.999999), (0.5, 1 / 3), (0.5, 0.5)]:
        shown, limit = percentages(rate, threshold)
        assert (shown == limit) is (rate == threshold)


def test_a_pinned_row_answered_by_another_route_fails() -> None:
    run = run_of("hello", route="r/fallback", model_route="r/1")
    assert not run.passed
    assert [(o.check, o.detail) for o in run.outcomes if not o.passed] == [
        ("answered_by", "answered by r/1, not the pinned r/fallback")]
    unnamed = answered_by("r/1", Result("hello", 200, None, 1.0, 2.0))
    assert not unnamed.passed and unnamed.detail.startswith("the answer names no route")


def test_the_configured_chain_is_not_checked_for_its_route_and_a_refusal_names_none() -> None:
    assert run_of("hello", route=None, model_route="r/2").passed
    refused = answered_by("r/1", Result("", 400, "input_blocked", None, 2.0))
    assert refused.passed


def test_a_run_that_evaluated_nothing_does_not_pass() -> None:
    skipped = Report(skipped_routes=["r/1"])
    assert skipped.passed(0.0) is False
    out = io.StringIO()
    assert skipped.write_summary(out, 0.0) is False
    assert out.getvalue() == "skip  r/1: disabled (DISABLED_ROUTES)\n"
    stopped = Report([run_of("hello")], error="stopped")
    as_json = orjson.loads(stopped.as_json(1.0))
    assert as_json["passed"] is False and as_json["error"] == "stopped"
    assert as_json["skipped_routes"] == []
