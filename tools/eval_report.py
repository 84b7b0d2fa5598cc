"""The outcome of `hello-ship eval`: one row per (case, route), the summary printed per route,
and the JSON report.

A row of a pinned route also checks that the answer came from that route (`answered_by`): a
proxy that strips `X-Route`, or a deploy that ignores it, would otherwise let another route's
answer pass as the pinned one's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from tools.eval_cases import Case, CheckOutcome, Result, case_passed

CONFIGURED = "(configured chain)"
SKIP_REASON = "disabled (DISABLED_ROUTES)"


def answered_by(route: str, result: Result) -> CheckOutcome:
    """Blocking: the answer names `route` as the route that gave it. An answer refused before
    any route ran (an error, such as an expected `input_blocked`) names none, and passes."""
    if result.model_route is None and result.error_code is not None:
        return CheckOutcome("answered_by", True, True, "")
    if result.model_route == route:
        return CheckOutcome("answered_by", True, True, "")
    got = (f"answered by {result.model_route}" if result.model_route
           else "the answer names no route")
    return CheckOutcome("answered_by", False, True, f"{got}, not the pinned {route}")


@dataclass(frozen=True, slots=True)
class CaseRun:
    case: Case
    route: str | None  # pinned route, or None for the chain as configured
    result: Result
    outcomes: tuple[CheckOutcome, ...]
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None

    @classmethod
    def judged(cls, case: Case, route: str | None, result: Result, input_tokens: int | None,
               output_tokens: int | None, cost_usd: float | None) -> CaseRun:
        outcomes = case.evaluate(result)
        if route is not None:
            outcomes.append(answered_by(route, result))
        return cls(case, route, result, tuple(outcomes), input_tokens, output_tokens, cost_usd)

    @property
    def passed(self) -> bool:
        return case_passed(self.outcomes)

    @property
    def label(self) -> str:
        return self.route or CONFIGURED

    def row(self) -> dict[str, Any]:
        result = self.result
        return {
            "case": self.case.id, "route": self.label,
            "model_route": result.model_route, "passed": self.passed,
            "failed_checks": [{"check": o.check, "detail": o.detail, "blocking": o.blocking}
                              for o in self.outcomes if not o.passed],
            "answer_chars": len(result.answer), "http_status": result.http_status,
            "error_code": result.error_code, "error_detail": result.error_detail,
            "request_id": result.request_id, "ttft_ms": result.ttft_ms,
            "latency_ms": result.latency_ms, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cost_usd": self.cost_usd,
            "tags": list(self.case.tags),
        }


@dataclass
class Report:
    runs: list[CaseRun] = field(default_factory=list)
    skipped_routes: list[str] = field(default_factory=list)  # disabled, so not evaluated
    error: str | None = None  # why the run stopped early; the rows are what it got to

    def by_route(self) -> dict[str, list[CaseRun]]:
        """The runs of each route, routes in the order they ran."""
        grouped: dict[str, list[CaseRun]] = {}
        for run in self.runs:
            grouped.setdefault(run.label, []).append(run)
        return grouped

    def pass_rates(self) -> dict[str, float]:
        return {route: sum(run.passed for run in runs) / len(runs)
                for route, runs in self.by_route().items()}

    def passed(self, threshold: float) -> bool:
        # No route evaluated (every one skipped, or the run stopped) is no pass.
        rates = self.pass_rates()
        return self.error is None and bool(rates) and all(
            rate >= threshold for rate in rates.values())

    def as_json(self, threshold: float) -> bytes:
        rates = self.pass_rates()
        return orjson.dumps({
            "threshold": threshold,
            "passed": self.passed(threshold),
            "error": self.error,
            "routes": {route: {"pass_rate": rates[route], "cases": len(runs)}
                       for route, runs in self.by_route().items()},
            "skipped_routes": self.skipped_routes,
            "results": [run.row() for run in self.runs],
        }, option=orjson.OPT_INDENT_2)

    def write_skipped(self, out: TextIO) -> None:
        for route in self.skipped_routes:
            out.write(f"skip  {route}: {SKIP_REASON}\n")

    def write_summary(self, out: TextIO, threshold: float) -> bool:
        self.write_skipped(out)
        for route, runs in self.by_route().items():
            passed = sum(run.passed for run in runs)
            rate = passed / len(runs)
            shown, limit = percentages(rate, threshold)
            out.write(f"{'ok  ' if rate >= threshold else 'FAIL'}  {route}: {passed}/{len(runs)}"
                      f" passed ({shown}, threshold {limit})\n")
            for run in runs:
                for outcome in run.outcomes:
                    if not outcome.passed:
                        mark = "fail" if outcome.blocking else "note"
                        out.write(f"      {mark}  {run.case.id} (line {run.case.line}): "
                                  f"{outcome.check}: {outcome.detail} "
                                  f"[{run.result.request_id}]\n")
        return self.passed(threshold)


def percentages(rate: float, threshold: float) -> tuple[str, str]:
    """Both as percentages, with as many decimals as it takes for the threshold to print as
    it is and for two different numbers to print differently: 1999/2000 must not read as
    100.0% against a 100.0% threshold. Then a rate below the threshold prints below it."""
    digits = 1
    while digits < 6 and (  # a threshold such as 1/3 has no exact form
            abs(float(f"{threshold * 100:.{digits}f}") - threshold * 100) > 1e-9
            or (rate != threshold and f"{rate:.{digits}%}" == f"{threshold:.{digits}%}")):
        digits += 1
    return f"{rate:.{digits}%}", f"{threshold:.{digits}%}"
