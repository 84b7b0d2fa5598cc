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

    @property
    def label(self) -> str:
        return self.route or CONFIGURED

    def row(self) -> dict[str, Any]:
        return {
            "case": self.case.id, "route": self.label,
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

    def by_route(self) -> dict[str, list[CaseRun]]:
        """The runs of each route, routes in the order they ran."""
        grouped: dict[str, list[CaseRun]] = {}
        for run in self.runs:
            grouped.setdefault(run.label, []).append(run)
        return grouped

    def pass_rates(self) -> dict[str, float]:
        return {route: sum(run.passed for run in runs) / len(runs)
                for route, runs in self.by_route().items()}

    def as_json(self, threshold: float) -> bytes:
        rates = self.pass_rates()
        return orjson.dumps({
            "threshold": threshold,
            "passed": all(rate >= threshold for rate in rates.values()),
            "routes": {route: {"pass_rate": rates[route], "cases": len(runs)}
                       for route, runs in self.by_route().items()},
            "results": [run.row() for run in self.runs],
        }, option=orjson.OPT_INDENT_2)

    def write_summary(self, out: TextIO, threshold: float) -> bool:
        ok = True
        for route, runs in self.by_route().items():
            passed = sum(run.passed for run in runs)
            rate = passed / len(runs)
            good = rate >= threshold
            ok &= good
            out.write(f"{'ok  ' if good else 'FAIL'}  {route}: {passed}/{len(runs)} passed "
                      f"({rate:.1%}, threshold {threshold:.1%})\n")
            for run in runs:
                for outcome in run.outcomes:
                    if not outcome.passed:
                        mark = "fail" if outcome.blocking else "note"
                        out.write(f"      {mark}  {run.case.id} (line {run.case.line}): "
                                  f"{outcome.check}: {outcome.detail} "
                                  f"[{run.result.request_id}]\n")
        return ok


class EvalSetupError(Exception):
    """The eval cannot run as asked (no routes to evaluate, a route that does not exist, a
    key that may not pin routes): an operator's mistake, not a model's failure."""


# Refusals that say the run is misconfigured, not that an answer is wrong.
SETUP_REFUSALS = {"unauthorized": "the service does not accept this key",
                  "route_pin_forbidden": "evaluating routes one by one takes an admin key "
                                         "(--key), or --route chain",
                  "unknown_route": "the service has no route of that name (see GET /ready)",
                  "route_disabled": "that route is disabled (DISABLED_ROUTES)"}
# A tenant limit refused the request: wait as told and try again, within the case's time.
RETRIED_REFUSALS = frozenset({"rate_limited", "too_many_streams"})
MAX_RETRY_WAIT_S = 10.0


async def run_cases(cases: Sequence[Case], *, url: str, key: str | None,
                    routes: Sequence[str | None], concurrency: int, timeout_s: float,
                    prices: Mapping[str, Price] | None = None) -> Report:
    """Every case on every route; a request that fails (a timeout, a dropped connection, a
    malformed answer) fails its own row. Raises `EvalSetupError` if the service refused the
    run itself (a key that may not pin routes, an unknown route)."""
    report = Report()
    limiter = anyio.CapacityLimiter(concurrency)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                  timeout=timeout_s) as client:

        async def one(case: Case, route: str | None) -> None:
            async with limiter:
                answer = _Answer(time.monotonic())
                try:
                    # httpx's timeouts are per read, which heartbeats keep renewing.
                    with anyio.fail_after(timeout_s):
                        await _exchange(client, case, route, answer)
                except TimeoutError:
                    answer.error_code = "client_timeout"
                except httpx2.HTTPError as exc:
                    answer.error_code = f"transport_error:{type(exc).__name__}"
                except (ValueError, KeyError, TypeError, AttributeError):
                    answer.error_code = "malformed_response"
                report.runs.append(answer.run(case, route, prices or {}))

        async with anyio.create_task_group() as group:
            for route in routes:
                for case in cases:
                    group.start_soon(one, case, route)
    for run in report.runs:
        if run.result.error_code in SETUP_REFUSALS:
            raise EvalSetupError(f"{run.label}: "
                                 f"{SETUP_REFUSALS[run.result.error_code]}")
    order = {case.id: index for index, case in enumerate(cases)}
    route_order = {route: index for index, route in enumerate(routes)}
    report.runs.sort(key=lambda run: (route_order[run.route], order[run.case.id]))
    return report


async def configured_routes(url: str, key: str | None, timeout_s: float) -> list[str]:
    """The usable-or-not routes of the chain, in order, as `/ready` lists them; disabled
    routes are left out (an operator switched them off)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                  timeout=timeout_s) as client:
        response = await client.get("/ready")
    try:
        listed = response.json()["routes"]
        routes = [str(route["route"]) for route in listed if not route.get("disabled")]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EvalSetupError(f"GET /ready answered {response.status_code} without a route "
                             "list: is --url the service's base URL?") from None
    if not routes:
        raise EvalSetupError("GET /ready lists no route that is not disabled")
    return routes


@dataclass
class _Answer:
    """What one request gave, filled in as it arrives, so a request that fails midway still
    reports what it got."""

    started: float
    parts: list[str] = field(default_factory=list)
    status: int = 0
    request_id: str | None = None
    ttft_ms: float | None = None
    error_code: str | None = None
    model_route: str | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    ended: bool = False  # a done or error frame arrived

    def frame(self, frame: Mapping[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "token":
            token = frame["token"]
            if not isinstance(token, str):
                raise TypeError("a token frame without text")
            if self.ttft_ms is None:
                self.ttft_ms = round((time.monotonic() - self.started) * 1000, 1)
            self.parts.append(token)
        elif kind == "meta":
            self.model_route = frame.get("model_route")
        elif kind == "done":
            self.usage, self.ended = frame.get("usage") or {}, True
        elif kind == "error":
            self.error_code, self.ended = frame.get("code"), True

    def run(self, case: Case, route: str | None, prices: Mapping[str, Price]) -> CaseRun:
        result = Result(answer="".join(self.parts), http_status=self.status,
                        error_code=self.error_code, ttft_ms=self.ttft_ms,
                        latency_ms=round((time.monotonic() - self.started) * 1000, 1),
                        request_id=self.request_id)
        input_tokens = self.usage.get("input_tokens")
        output_tokens = self.usage.get("output_tokens")
        price = prices.get(self.model_route or "")
        cost = (price.nano_usd(input_tokens, output_tokens) / NANO_USD_PER_USD
                if price is not None and isinstance(input_tokens, int)
                and isinstance(output_tokens, int) else None)
        return CaseRun(case, route, result, tuple(case.evaluate(result)), self.model_route,
                       input_tokens, output_tokens, cost)


async def _exchange(client: httpx2.AsyncClient, case: Case, route: str | None,
                    answer: _Answer) -> None:
    headers = {"X-Route": route} if route else {}
    path = "/chat/stream" if case.endpoint == "stream" else "/chat"
    while True:
        async with client.stream("POST", path, json=case.body(), headers=headers) as response:
            answer.status = response.status_code
            answer.request_id = response.headers.get("x-request-id")
            if response.status_code != 200:
                await response.aread()
                answer.error_code = _envelope_code(response.content)
                if response.status_code == 429 and answer.error_code in RETRIED_REFUSALS:
                    await anyio.sleep(_retry_after(response.headers.get("retry-after")))
                    continue
            elif case.endpoint == "stream":
                await _read_stream(response, answer)
            else:
                body = orjson.loads(await response.aread())
                answer.parts.append(body["answer"])
                answer.model_route, answer.usage = body.get("model_route"), body["usage"]
            return


async def _read_stream(response: httpx2.Response, answer: _Answer) -> None:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line:
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            continue  # id:, event:, retry: and comment lines carry nothing to check
        if data:
            answer.frame(orjson.loads("\n".join(data)))
            data = []
    if data:
        answer.frame(orjson.loads("\n".join(data)))
    if not answer.ended:
        answer.error_code = "incomplete_stream"  # no done frame: the answer may be cut


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


def _envelope_code(body: bytes) -> str | None:
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None
