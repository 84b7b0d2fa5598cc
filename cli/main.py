"""The `hello-ship` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cli.loadtest import add_parser as add_loadtest
from cli.serve import serve_command


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
                    "(docs/configuration.md); flags override it.",
        epilog="example: hello-ship serve --host 0.0.0.0 --port 8080 --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to bind (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind, 0 for any free one "
                                                "(env PORT, default 8080)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (default 1)")
    serve.set_defaults(run=serve_command)
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
    smoke.add_argument("--timeout", type=_seconds, default=30.0,
                       help="seconds for the whole smoke test (default 30)")
    smoke.set_defaults(run=_smoke)
    evaluate = commands.add_parser(
        "eval",
        help="run golden cases against the service, once per route",
        description="Send every case of CASES (JSON lines, docs/evaluating.md) to the service and "
                    "check the answers, once per route of the chain (pinned with X-Route, "
                    "which takes an admin key), or once through the chain as configured. "
                    "Without --url the service runs in-process from the environment. "
                    "Exits 1 when a route's pass rate is below the threshold, 2 when the "
                    "cases file, the config or the service cannot be used, or no route is "
                    "left to evaluate.",
        epilog="examples:\n  hello-ship eval eval/smoke.jsonl --report eval-report.json\n"
               "  hello-ship eval eval/smoke.jsonl --url https://chat.example.com "
               "--key $ADMIN_KEY --route all --config hello-ship.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("cases", help="the cases file (JSON lines)")
    evaluate.add_argument("--url", help="base URL of a running service (default: run it "
                                        "in-process from the environment)")
    evaluate.add_argument("--key", help="API key: an admin key to pin routes, a tenant key "
                                        "for --route chain")
    evaluate.add_argument("--route", default="all",
                          help="all (default): every route of the chain, one by one; "
                               "chain: the chain as configured, with fallback; or a route "
                               "name")
    evaluate.add_argument("--report", help="write the JSON report here (an old one there is "
                                           "removed first)")
    evaluate.add_argument("--config", help="the service's TOML config (default: "
                                           "$HELLO_SHIP_CONFIG): with --url only its [prices] "
                                           "are read, to price the answers")
    evaluate.add_argument("--threshold", type=_share, default=1.0,
                          help="pass rate each route needs, 0-1 (default 1.0: every case)")
    evaluate.add_argument("--concurrency", type=_concurrency, default=4,
                          help=f"requests at a time, 1-{MAX_CONCURRENCY} (default 4)")
    evaluate.add_argument("--timeout", type=_seconds, default=120.0,
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
    add_loadtest(commands)
    return parser


def _hash_key(args: argparse.Namespace) -> int:
    from tenancy.identity import hashed_form, new_key

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
    from tools.smoke import run_smoke

    ok = run_smoke(args.url, key=args.key, timeout_s=args.timeout, out=sys.stdout)
    return 0 if ok else 1


def _eval(args: argparse.Namespace) -> int:
    from cli.eval import run_eval

    return run_eval(args)


MAX_SECONDS = 86_400.0  # a day: any longer is a typo, and inf or nan would never end
MAX_CONCURRENCY = 1000


# argparse types: a value out of range is a usage error (exit status 2) naming the flag, not
# a traceback or a run that never ends. Comparisons are written so that nan fails them.
def _number(kind: Callable[[str], float], text: str) -> float:
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None


def _share(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    value = _number(float, text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS:g} "
                                         f"seconds, got {text!r}")
    return value


def _concurrency(text: str) -> int:
    value = int(_number(int, text))
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_CONCURRENCY}, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
