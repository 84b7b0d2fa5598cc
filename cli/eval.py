"""Running `hello-ship eval` from its parsed arguments: cases, service, routes, prices, report
and exit status.

Exit status 0: every evaluated route reached the threshold; 1: a route fell below it; 2: the
run could not be made (a bad cases or config file, an unusable service, a refused key, no route
left to evaluate) or stopped on a fault of the runner itself. Status 1 is kept for answers that
regressed, so a crash never reads as one. The report is written whenever requests were made,
with `error` saying why a run stopped; a report of an earlier run is removed first, so a stale
one never passes for this run's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from config.file import CONFIG_VAR
from config.settings import Settings, SettingsError
from quota.prices import Price
from tools.eval_cases import Case, CaseFileError, load_cases
from tools.eval_report import Report


class _Stop(Exception):
    """Ends the run with exit status 2 and this message."""


def run_eval(args: argparse.Namespace) -> int:
    report = Report()
    path = Path(args.report) if args.report else None
    try:
        if path is not None:
            path.unlink(missing_ok=True)
    except OSError as exc:
        _say(f"cannot replace {path}: {exc.strerror or type(exc).__name__}")
        return 2
    try:
        return _run(args, report, path)
    except _Stop as exc:
        _say(str(exc))
    except Exception as exc:  # last resort: one line, and not the exit status of a regression
        report.error = f"stopped by an unexpected error: {_describe(exc)}"
        _say(f"{report.error} (a fault of the eval runner, not a failed case)")
    if path is not None and report.runs:
        _write(path, report, args.threshold)
    return 2


def _run(args: argparse.Namespace, report: Report, path: Path | None) -> int:
    try:
        cases = load_cases(args.cases)
    except CaseFileError as exc:
        raise _Stop(str(exc)) from None
    if not args.route.strip():
        raise _Stop("--route is all, chain or a route name")
    config = args.config or os.environ.get(CONFIG_VAR) or None
    if args.url:
        _evaluate(args, cases, args.url, _prices(config), report)
    else:
        from telemetry.jsonlog import configure_logging
        from tools.inprocess import ServiceDidNotStart, in_process_env, in_process_service

        env = in_process_env({**os.environ, **({CONFIG_VAR: config} if config else {})})
        settings = _settings(env)
        # The summary owns stdout; the service's lines go to stderr, to look up a request id.
        configure_logging(settings.log_level, stream=sys.stderr)
        try:
            with in_process_service(settings) as url:
                _evaluate(args, cases, url, settings.prices, report)
        except ServiceDidNotStart as exc:  # its own lines on stderr say why
            raise _Stop(str(exc)) from None
    ok = report.write_summary(sys.stdout, args.threshold)
    if path is not None and not _write(path, report, args.threshold):
        return 2
    return 0 if ok else 1


def _evaluate(args: argparse.Namespace, cases: Sequence[Case], url: str,
              prices: Mapping[str, Price], report: Report) -> None:
    import anyio
    import httpx2

    from tools.eval_run import EvalSetupError, configured_routes, run_cases

    async def run() -> None:
        routes: list[str | None]
        if args.route == "all":
            listed = await configured_routes(url, args.key, args.timeout)
            report.skipped_routes = listed.skipped
            if not listed.routes:
                report.write_skipped(sys.stdout)
                raise EvalSetupError("every route of the chain is disabled: nothing to "
                                     "evaluate")
            routes = list(listed.routes)
        else:
            routes = [None if args.route == "chain" else args.route]
        await run_cases(cases, url=url, key=args.key, routes=routes,
                        concurrency=args.concurrency, timeout_s=args.timeout, prices=prices,
                        report=report)

    try:
        anyio.run(run)
    except httpx2.HTTPError as exc:
        raise _Stop(f"cannot use the service at {url}: {type(exc).__name__}") from None
    except EvalSetupError as exc:
        report.error = str(exc)
        raise _Stop(str(exc)) from None


def _prices(config: str | None) -> Mapping[str, Price]:
    if config is None:
        return {}
    from tools.eval_prices import prices_from_config

    try:
        return prices_from_config(config)
    except SettingsError as exc:
        raise _Stop(f"--config {config}: {exc}") from None


def _settings(env: Mapping[str, str]) -> Settings:
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise _Stop(str(exc)) from None


def _write(path: Path, report: Report, threshold: float) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(report.as_json(threshold))
    except OSError as exc:
        _say(f"cannot write {path}: {exc.strerror or type(exc).__name__}")
        return False
    return True


def _say(problem: str) -> None:
    sys.stderr.write(f"hello-ship: eval: {problem}\n")


def _describe(exc: BaseException) -> str:
    """The first error a task group gathered, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
