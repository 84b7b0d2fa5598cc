"""`hello-ship eval`: golden cases run against the service, once per route.

Each case is sent as a real request (with the key given, and with `X-Route` naming the route
when routes are evaluated one by one, which takes an admin key), with at most `concurrency`
requests at a time. The result of every (case, route) pair is checked and written to a JSON
report; the summary says, per route, how many passed and which check failed where.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import httpx2
import orjson

from app.eval_cases import Case, CheckOutcome, Result, case_passed
from quota.ledger import NANO_USD_PER_USD
from quota.prices import Price

CONFIGURED = "(configured chain)"


@dataclass(frozen=True, slots=True)
class CaseRun:
    case: Case
    route: str | None  # pinned route, or None for the chain as configured
    result: Result
    outcomes: tuple[CheckOutcome, ...]
    model_route: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None

    @property
    def passed(self) -> bool:
        return case_passed(self.outcomes)

    def row(self) -> dict[str, Any]:
        return {
            "case": self.case.id, "route": self.route or CONFIGURED,
            "model_route": self.model_route, "passed": self.passed,
            "failed_checks": [{"check": o.check, "detail": o.detail, "blocking": o.blocking}
                              for o in self.outcomes if not o.passed],
            "answer_chars": len(self.result.answer), "http_status": self.result.http_status,
            "error_code": self.result.error_code, "request_id": self.result.request_id,
            "ttft_ms": self.result.ttft_ms,
            "latency_ms": self.result.latency_ms, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cost_usd": self.cost_usd,
            "tags": list(self.case.tags),
        }


@dataclass
class Report:
    runs: list[CaseRun] = field(default_factory=list)

    def pass_rates(self) -> dict[str, float]:
        totals: dict[str, list[int]] = {}
        for run in self.runs:
            counts = totals.setdefault(run.route or CONFIGURED, [0, 0])
            counts[0] += run.passed
            counts[1] += 1
        return {route: passed / total for route, (passed, total) in totals.items()}

    def as_json(self, threshold: float) -> bytes:
        rates = self.pass_rates()
        return orjson.dumps({
            "threshold": threshold,
            "passed": all(rate >= threshold for rate in rates.values()),
            "routes": {route: {"pass_rate": rate,
                               "cases": sum(1 for r in self.runs if (r.route or CONFIGURED)
                                            == route)}
                       for route, rate in rates.items()},
            "results": [run.row() for run in self.runs],
        }, option=orjson.OPT_INDENT_2)

    def write_summary(self, out: TextIO, threshold: float) -> bool:
        ok = True
        for route, rate in self.pass_rates().items():
            runs = [run for run in self.runs if (run.route or CONFIGURED) == route]
            good = rate >= threshold
            ok &= good
            out.write(f"{'ok  ' if good else 'FAIL'}  {route}: {sum(r.passed for r in runs)}"
                      f"/{len(runs)} passed ({rate:.0%}, threshold {threshold:.0%})\n")
            for run in runs:
                for outcome in run.outcomes:
                    if not outcome.passed:
                        mark = "fail" if outcome.blocking else "note"
                        out.write(f"      {mark}  {run.case.id} (line {run.case.line}): "
                                  f"{outcome.check}: {outcome.detail} "
                                  f"[{run.result.request_id}]\n")
        return ok


async def run_cases(cases: Sequence[Case], *, url: str, key: str | None,
                    routes: Sequence[str | None], concurrency: int, timeout_s: float,
                    prices: Mapping[str, Price] | None = None) -> Report:
    report = Report()
    limiter = anyio.CapacityLimiter(concurrency)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                  timeout=timeout_s) as client:

        async def one(case: Case, route: str | None) -> None:
            async with limiter:
                report.runs.append(await _run_case(client, case, route, prices or {}))

        async with anyio.create_task_group() as group:
            for route in routes:
                for case in cases:
                    group.start_soon(one, case, route)
    order = {(case.id): index for index, case in enumerate(cases)}
    route_order = {route: index for index, route in enumerate(routes)}
    report.runs.sort(key=lambda run: (route_order[run.route], order[run.case.id]))
    return report


async def configured_routes(url: str, key: str | None, timeout_s: float) -> list[str]:
    """The routes of the chain, in order, as `/ready` lists them (whether usable or not)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                  timeout=timeout_s) as client:
        response = await client.get("/ready")
    return [str(route["route"]) for route in response.json().get("routes", [])]


async def _run_case(client: httpx2.AsyncClient, case: Case, route: str | None,
                    prices: Mapping[str, Price]) -> CaseRun:
    headers = {"X-Route": route} if route else {}
    started = time.monotonic()
    answer: list[str] = []
    ttft_ms: float | None = None
    error_code: str | None = None
    model_route: str | None = None
    usage: Mapping[str, Any] = {}
    if case.endpoint == "stream":
        async with client.stream("POST", "/chat/stream", json=case.body(),
                                 headers=headers) as response:
            status = response.status_code
            request_id = response.headers.get("x-request-id")
            if status != 200:
                await response.aread()
                error_code = _envelope_code(response.content)
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    frame = orjson.loads(line[6:])
                    kind = frame.get("type")
                    if kind == "token":
                        if ttft_ms is None:
                            ttft_ms = round((time.monotonic() - started) * 1000, 1)
                        answer.append(frame["token"])
                    elif kind == "meta":
                        model_route = frame.get("model_route")
                    elif kind == "done":
                        usage = frame.get("usage") or {}
                    elif kind == "error":
                        error_code = frame.get("code")
    else:
        response = await client.post("/chat", json=case.body(), headers=headers)
        status = response.status_code
        request_id = response.headers.get("x-request-id")
        if status == 200:
            body = response.json()
            answer.append(body.get("answer", ""))
            model_route, usage = body.get("model_route"), body.get("usage") or {}
        else:
            error_code = _envelope_code(response.content)
    result = Result(answer="".join(answer), http_status=status, error_code=error_code,
                    ttft_ms=ttft_ms, latency_ms=round((time.monotonic() - started) * 1000, 1),
                    request_id=request_id)
    input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    price = prices.get(model_route or "")
    cost = (price.nano_usd(input_tokens, output_tokens) / NANO_USD_PER_USD
            if price is not None and input_tokens is not None and output_tokens is not None
            else None)
    return CaseRun(case, route, result, tuple(case.evaluate(result)), model_route,
                   input_tokens, output_tokens, cost)


def _envelope_code(body: bytes) -> str | None:
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None
