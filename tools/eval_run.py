"""`hello-ship eval`: golden cases run against the service, once per route.

Each case is sent as a real request (with the key given, and with `X-Route` naming the route
when routes are evaluated one by one, which takes an admin key), with at most `concurrency`
requests at a time. The result of every (case, route) pair is checked into a row of the
report (tools.eval_report); a request that fails fails its own row, never the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import httpx2

from quota.prices import Price
from tools.eval_cases import Case, Result
from tools.eval_prices import cost_usd
from tools.eval_report import CaseRun, Report
from tools.wire import (
    Done,
    Failed,
    Frame,
    MalformedResponse,
    Token,
    Usage,
    chat_body,
    envelope_code,
    read_frames,
    service_client,
)


class EvalSetupError(Exception):
    """The eval cannot run as asked (no routes to evaluate, a route that does not exist, a
    key that may not pin routes): an operator's mistake, not a model's failure."""


# Refusals that say the run is misconfigured, not that an answer is wrong.
SETUP_REFUSALS = {"unauthorized": "the service does not accept this key",
                  "route_pin_forbidden": "evaluating routes one by one takes an admin key "
                                         "(--key), or --route chain",
                  "unknown_route": "the service has no route of that name (see GET /ready)",
                  "route_disabled": "that route is disabled (DISABLED_ROUTES)"}
# An admin key may only send pinned requests; unpinned, the service takes it for a bad key.
UNPINNED_UNAUTHORIZED = ("the service does not accept this key for --route chain, which takes "
                         "a tenant key (an admin key may only pin routes)")
# A tenant limit refused the request: wait as told and try again, within the case's time.
RETRIED_REFUSALS = frozenset({"rate_limited", "too_many_streams"})
MAX_RETRY_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class RouteList:
    routes: list[str]  # to evaluate, in chain order
    skipped: list[str]  # disabled by the operator


async def run_cases(cases: Sequence[Case], *, url: str, key: str | None,
                    routes: Sequence[str | None], concurrency: int, timeout_s: float,
                    prices: Mapping[str, Price] | None = None,
                    report: Report | None = None) -> Report:
    """Every case on every route, into `report` as each one ends (so a caller still has the
    rows of a run that stopped). Raises `EvalSetupError` if the service refused the run
    itself (a key that may not pin routes, an unknown route): the first such refusal cancels
    the requests in flight and sends no more, whose rows are then left out."""
    report = report if report is not None else Report()
    limiter = anyio.CapacityLimiter(concurrency)
    async with (service_client(url, key, timeout_s) as client,
                anyio.create_task_group() as group):

        async def one(case: Case, route: str | None) -> None:
            async with limiter:
                answer = _Answer(time.monotonic())
                try:
                    # httpx's timeouts are per read, which heartbeats keep renewing.
                    with anyio.fail_after(timeout_s):
                        await _exchange(client, case, route, answer)
                except TimeoutError:
                    answer.error_code = "client_timeout"
                except MalformedResponse as exc:
                    answer.error_code, answer.error_detail = "malformed_response", str(exc)
                except httpx2.HTTPError as exc:
                    answer.error_code = f"transport_error:{type(exc).__name__}"
                report.runs.append(answer.run(case, route, prices or {}))
                if answer.error_code in SETUP_REFUSALS:
                    # Stop before the limiter lets another request go: the rest would be
                    # refused alike. The refusal is raised below, once the group has ended.
                    group.cancel_scope.cancel()

        for route in routes:
            for case in cases:
                group.start_soon(one, case, route)
    order = {case.id: index for index, case in enumerate(cases)}
    route_order = {route: index for index, route in enumerate(routes)}
    report.runs.sort(key=lambda run: (route_order[run.route], order[run.case.id]))
    for run in report.runs:
        refusal = run.result.error_code
        if refusal in SETUP_REFUSALS:
            reason = (UNPINNED_UNAUTHORIZED if refusal == "unauthorized" and run.route is None
                      else SETUP_REFUSALS[refusal])
            raise EvalSetupError(f"{run.label}: {reason}")
    return report


async def configured_routes(url: str, key: str | None, timeout_s: float) -> RouteList:
    """The routes of the chain, in order, as `/ready` lists them; disabled routes (an
    operator switched them off) are listed apart, as skipped."""
    try:
        with anyio.fail_after(timeout_s):  # the whole call: a trickled body renews each read
            async with service_client(url, key, timeout_s) as client:
                response = await client.get("/ready")
    except TimeoutError:
        raise EvalSetupError(f"GET /ready did not answer within {timeout_s:g} s") from None
    try:
        listed = response.json()["routes"]
        entries = [(route["route"], route.get("disabled") is True) for route in listed]
    except (ValueError, KeyError, TypeError, AttributeError):
        entries = []
    if not entries or not all(isinstance(name, str) and name for name, _ in entries):
        raise EvalSetupError(f"GET /ready answered {response.status_code} without a route "
                             "list: is --url the service's base URL?")
    names = list(dict.fromkeys(name for name, _ in entries))  # once each, in chain order
    skipped = {name for name, disabled in entries if disabled}
    return RouteList([name for name in names if name not in skipped],
                     [name for name in names if name in skipped])


@dataclass
class _Answer:
    """What one request gave, filled in as it arrives, so a request that fails midway still
    reports what it got."""

    asked: float  # the first attempt began: a client_timeout's latency counts from here
    # This attempt began, after any Retry-After wait: ttft and latency count from here.
    started: float = field(init=False)
    parts: list[str] = field(default_factory=list)
    status: int = 0
    request_id: str | None = None
    ttft_ms: float | None = None
    error_code: str | None = None
    error_detail: str | None = None
    model_route: str | None = None
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self.started = self.asked

    def frame(self, frame: Frame) -> None:
        if isinstance(frame, Token):
            if self.ttft_ms is None:
                self.ttft_ms = round((time.monotonic() - self.started) * 1000, 1)
            self.parts.append(frame.text)
        elif isinstance(frame, Failed):
            self.error_code = frame.code
        else:
            self.named(frame.model_route)
            if isinstance(frame, Done):
                self.usage = frame.usage

    def named(self, route: str | None) -> None:
        if route is not None and self.model_route not in (None, route):
            raise MalformedResponse(f"the answer names two routes, {self.model_route} "
                                    f"and {route}")
        self.model_route = route or self.model_route

    def run(self, case: Case, route: str | None, prices: Mapping[str, Price]) -> CaseRun:
        # A row is judged on its last attempt, so its figures are that attempt's; a timeout
        # is the whole request's, retries and waits included.
        since = self.asked if self.error_code == "client_timeout" else self.started
        result = Result(answer="".join(self.parts), http_status=self.status,
                        error_code=self.error_code, ttft_ms=self.ttft_ms,
                        latency_ms=round((time.monotonic() - since) * 1000, 1),
                        request_id=self.request_id, model_route=self.model_route,
                        error_detail=self.error_detail)
        usage = self.usage
        return CaseRun.judged(case, route, result, usage.input_tokens, usage.output_tokens,
                              cost_usd(prices, self.model_route, usage))


async def _exchange(client: httpx2.AsyncClient, case: Case, route: str | None,
                    answer: _Answer) -> None:
    headers = {"X-Route": route} if route else {}
    path = "/chat/stream" if case.endpoint == "stream" else "/chat"
    while True:
        answer.started = time.monotonic()
        async with client.stream("POST", path, json=case.body(), headers=headers) as response:
            answer.status = response.status_code
            answer.request_id = response.headers.get("x-request-id")
            if response.status_code != 200:
                await response.aread()
                code = envelope_code(response.content)
                if response.status_code == 429 and code in RETRIED_REFUSALS:
                    # Not the row's error unless the retries run out of time (client_timeout).
                    await anyio.sleep(_retry_after(response.headers.get("retry-after")))
                    continue
                answer.error_code = code
            elif case.endpoint == "stream":
                await _read_stream(response, answer)
            else:
                body = chat_body(await response.aread())
                answer.parts.append(body.answer)
                answer.named(body.model_route)
                answer.usage = body.usage
            return


async def _read_stream(response: httpx2.Response, answer: _Answer) -> None:
    ended = False
    async for frame in read_frames(response):
        answer.frame(frame)
        ended = isinstance(frame, Done | Failed)
    if not ended:
        answer.error_code = "incomplete_stream"  # no done frame: the answer may be cut


def _retry_after(header: str | None) -> float:
    try:
        wait = float(header or 1)
    except ValueError:
        return 1.0
    return min(max(wait, 0.0), MAX_RETRY_WAIT_S) if math.isfinite(wait) else 1.0
