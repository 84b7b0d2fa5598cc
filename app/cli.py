"""The `hello-ship` command."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from app.settings import Settings, SettingsError

if TYPE_CHECKING:  # the eval modules load only for `hello-ship eval`
    from app.eval_cases import Case


def load_settings_or_exit(env: Mapping[str, str]) -> Settings:
    """Settings from `env`, or one clear line on stderr and exit status 2."""
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        _refuse(exc)


def _refuse(exc: SettingsError) -> NoReturn:
    sys.stderr.write(f"hello-ship: {exc}\n")  # before logging exists: a plain line
    raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.jsonlog import configure_logging

    # Flags override the environment; workers re-read it, so the overrides go there too.
    if args.host is not None:
        os.environ["HOST"] = args.host
    if args.port is not None:
        os.environ["PORT"] = str(args.port)
    settings = load_settings_or_exit(os.environ)
    if args.workers > 1 and settings.metrics_port == 0:
        _refuse(SettingsError("METRICS_PORT", "0 (any free port) would give each worker its "
                                              "own; choose a port"))
    chosen = os.environ.get(METRICS_DIR_VAR)
    if chosen and not (os.path.isdir(chosen) and os.access(chosen, os.W_OK)):
        _refuse(SettingsError(METRICS_DIR_VAR, f"{chosen} is not a writable directory"))
    configure_logging(settings.log_level)
    with _shared_metrics_dir(args.workers):
        uvicorn.run(
            "app.main:app",
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_config=None,  # app.main configures JSON logging in every worker
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + 5,
        )
    return 0


METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def _shared_metrics_dir(workers: int) -> Iterator[None]:
    """Several workers write their metrics to files in one directory, so `/metrics` on any
    of them counts them all. The workers inherit the variable; values of an earlier run in a
    directory the operator chose are wiped, or they would be counted again."""
    chosen = os.environ.get(METRICS_DIR_VAR)
    if chosen:
        for stale in Path(chosen).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield
        return
    if workers <= 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="hello-ship-metrics-")
    os.environ[METRICS_DIR_VAR] = path
    try:
        yield
    finally:
        del os.environ[METRICS_DIR_VAR]
        shutil.rmtree(path, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hello-ship",
        description="A production LLM chat service streaming over Server-Sent Events.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the service with uvicorn. Settings come from the environment "
                    "(see README); flags override it.",
        epilog="example: hello-ship serve --host 0.0.0.0 --port 8080 --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to bind (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind, 0 for any free one "
                                                "(env PORT, default 8080)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (default 1)")
    serve.set_defaults(run=_serve)
    smoke = commands.add_parser(
        "smoke",
        help="check a running service after a deploy",
        description="Post-deploy smoke test: /ready is 200, /chat gives a non-empty answer, "
                    "/chat/stream sends a token and done. Prints each step with its timing; "
                    "exits 1 on the first failure.",
        epilog="example: hello-ship smoke https://chat.example.com --key $HELLO_SHIP_KEY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    smoke.add_argument("url", help="base URL of the service")
    smoke.add_argument("--key", help="API key to send as a bearer token")
    smoke.add_argument("--timeout", type=float, default=30.0,
                       help="seconds for the whole smoke test (default 30)")
    smoke.set_defaults(run=_smoke)
    evaluate = commands.add_parser(
        "eval",
        help="run golden cases against the service, once per route",
        description="Send every case of CASES (JSON lines, see README) to the service and "
                    "check the answers, once per route of the chain (pinned with X-Route, "
                    "which takes an admin key), or once through the chain as configured. "
                    "Without --url the service runs in-process from the environment. "
                    "Exits 1 when a route's pass rate is below the threshold, 2 when the "
                    "cases file or the service cannot be used.",
        epilog="examples:\n  hello-ship eval eval/smoke.jsonl --report eval-report.json\n"
               "  hello-ship eval eval/smoke.jsonl --url https://chat.example.com "
               "--key $ADMIN_KEY --route all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("cases", help="the cases file (JSON lines)")
    evaluate.add_argument("--url", help="base URL of a running service (default: run it "
                                        "in-process from the environment)")
    evaluate.add_argument("--key", help="API key: an admin key to pin routes")
    evaluate.add_argument("--route", default="all",
                          help="all (default): every route of the chain, one by one; "
                               "chain: the chain as configured, with fallback; or a route "
                               "name")
    evaluate.add_argument("--report", help="write the JSON report here")
    evaluate.add_argument("--threshold", type=float, default=1.0,
                          help="pass rate each route needs, 0-1 (default 1.0: every case)")
    evaluate.add_argument("--concurrency", type=int, default=4,
                          help="requests at a time (default 4)")
    evaluate.add_argument("--timeout", type=float, default=120.0,
                          help="seconds per request, retries after a rate limit included "
                               "(default 120)")
    evaluate.set_defaults(run=_eval)
    hash_key = commands.add_parser(
        "hash-key",
        help="print the sha256: form of an API key for the config file",
        description="Print the sha256: form of KEY for a tenant's `keys` in the config file. "
                    "With no KEY, make a new random key and print both; with '-', read the "
                    "key from stdin (keeps it out of shell history).",
        epilog="examples:\n  hello-ship hash-key\n  printf %s \"$KEY\" | hello-ship hash-key -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hash_key.add_argument("key", nargs="?", help="the key, or - to read it from stdin")
    hash_key.set_defaults(run=_hash_key)
    return parser


def _hash_key(args: argparse.Namespace) -> int:
    from app.tenants import hashed_form, new_key

    key = args.key
    if key == "-":
        key = sys.stdin.read().strip()
    if key is None:
        key = new_key()
        sys.stdout.write(f"key:    {key}\n        (give this to the client; it is not stored)\n"
                         f"config: {hashed_form(key)}\n")
        return 0
    if not key:
        sys.stderr.write("hello-ship: hash-key: the key is empty\n")
        return 2
    sys.stdout.write(hashed_form(key) + "\n")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from app.smoke import run_smoke

    ok = run_smoke(args.url, key=args.key, timeout_s=args.timeout, out=sys.stdout)
    return 0 if ok else 1


def _eval(args: argparse.Namespace) -> int:
    from app.eval_cases import CaseFileError, load_cases

    try:
        cases = load_cases(args.cases)
    except CaseFileError as exc:
        sys.stderr.write(f"hello-ship: eval: {exc}\n")
        return 2
    if not 0 <= args.threshold <= 1 or args.concurrency < 1 or not args.route.strip():
        sys.stderr.write("hello-ship: eval: --threshold is 0-1, --concurrency at least 1, "
                         "--route all, chain or a route name\n")
        return 2
    if args.url:
        return _evaluate(args, cases, args.url, None)
    from app.inprocess import in_process_service
    from app.jsonlog import configure_logging

    settings = load_settings_or_exit(os.environ)
    # The summary owns stdout; the service's lines go to stderr, to look up a request id.
    configure_logging(settings.log_level, stream=sys.stderr)
    try:
        with in_process_service(settings) as url:
            return _evaluate(args, cases, url, settings)
    except RuntimeError as exc:  # it did not start; its own lines on stderr say why
        sys.stderr.write(f"hello-ship: eval: {exc}\n")
        return 2


def _evaluate(args: argparse.Namespace, cases: Sequence[Case], url: str,
              settings: Settings | None) -> int:
    import anyio
    import httpx2

    from app.eval_run import EvalSetupError, Report, configured_routes, run_cases

    async def run() -> Report:
        routes: list[str | None]
        if args.route == "all":
            routes = list(await configured_routes(url, args.key, args.timeout))
        else:
            routes = [None if args.route == "chain" else args.route]
        return await run_cases(cases, url=url, key=args.key, routes=routes,
                               concurrency=args.concurrency, timeout_s=args.timeout,
                               prices=settings.prices if settings else None)

    try:
        report = anyio.run(run)
    except httpx2.HTTPError as exc:
        sys.stderr.write(f"hello-ship: eval: cannot use the service at {url}: "
                         f"{type(exc).__name__}\n")
        return 2
    except EvalSetupError as exc:
        sys.stderr.write(f"hello-ship: eval: {exc}\n")
        return 2
    ok = report.write_summary(sys.stdout, args.threshold)
    if args.report:
        try:
            path = Path(args.report)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(report.as_json(args.threshold))
        except OSError as exc:
            sys.stderr.write(f"hello-ship: eval: cannot write {args.report}: "
                             f"{exc.strerror}\n")
            return 2
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
