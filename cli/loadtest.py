"""The `hello-ship loadtest` subcommand: its flags, checked, turned into a load test."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

MAX_CONCURRENCY = 10_000
MAX_RATE = 10_000.0
MAX_REQUESTS = 10_000_000
MAX_SECONDS = 86_400.0
# Named for this command alone, so a key exported for something else is never sent to a
# load test's target by accident.
KEY_VARIABLE = "LOADTEST_KEY"

DESCRIPTION = """\
Measure time to first token (TTFT), inter-token latency, TPOT, end-to-end latency and
throughput of a streaming chat endpoint under load: hello-ship's /chat/stream, or any
OpenAI-compatible /v1/chat/completions (hello-ship's own, vLLM, LiteLLM, a vendor).

Closed loop (--concurrency: that many requests always in flight) or open loop (--rate:
requests sent at Poisson arrivals whatever the target's pace, which shows queueing that a
closed loop hides). A comma-separated list runs a sweep, one level after the other. Each
level stops at --requests or --duration, whichever comes first.

Exit status: 0 done; 1 no request succeeded; 2 the run could not start, or its report or
plot could not be written; 130 Ctrl-C (the partial summary is still printed and written)."""

EPILOG = """\
examples:
  hello-ship loadtest http://127.0.0.1:8080 --concurrency 1,10,50 --requests 200
  hello-ship loadtest http://127.0.0.1:8080 --rate 20 --duration 60 --slo-ttft-ms 800 \\
      --report ttft.json --plot ttft.png
  hello-ship loadtest https://api.example.com/v1/chat/completions --model my-model \\
      --concurrency 8 --prompts prompts.jsonl --max-tokens 256

The key is read from $LOADTEST_KEY when neither --key nor an Authorization header is given
(it keeps the key out of ps and shell history)."""


def add_parser(commands: Any) -> None:
    """Adds `loadtest` to the command's subparsers."""
    parser = commands.add_parser(
        "loadtest", help="measure TTFT and throughput of a streaming chat endpoint under load",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the endpoint, or the base URL of the service")
    parser.add_argument("--api", choices=("hello-ship", "openai"),
                        help="the wire format (default: from the URL's path: .../chat/"
                             "completions is openai; else hello-ship)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_list(_concurrency),
                      help="closed loop: requests in flight, or a list for a sweep "
                           "(default 1)")
    load.add_argument("--rate", type=_list(_rate),
                      help="open loop: requests per second, Poisson arrivals; or a list")
    parser.add_argument("--requests", type=_bounded(int, 1, MAX_REQUESTS), default=100,
                        help="requests per level, warm-up not counted (default 100)")
    parser.add_argument("--duration", type=_bounded(float, 0, MAX_SECONDS, low_open=True),
                        default=60.0, help="seconds of sending per level (default 60)")
    parser.add_argument("--warmup", type=_bounded(int, 0, MAX_REQUESTS), default=0,
                        help="requests sent first at each level and left out of the figures "
                             "(default 0)")
    parser.add_argument("--prompts", help="JSON lines of {\"prompt\": ...} or "
                                          "{\"messages\": [...]} (default: a built-in set)")
    parser.add_argument("--max-tokens", type=_bounded(int, 1, 1_000_000),
                        help="max_tokens asked of each answer")
    parser.add_argument("--model", help="the model to ask an OpenAI-compatible target for "
                                        "(default: the first it lists)")
    parser.add_argument("--header", action="append", default=[], type=_header,
                        metavar="'NAME: VALUE'", help="a header to send, repeatable")
    parser.add_argument("--key", type=_key,
                        help=f"API key sent as a bearer token (default: ${KEY_VARIABLE})")
    parser.add_argument("--timeout", type=_bounded(float, 0, MAX_SECONDS, low_open=True),
                        default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--slo-ttft-ms", type=_bounded(float, 0, MAX_SECONDS * 1000,
                                                        low_open=True),
                        help="report goodput: requests per second that succeeded within "
                             "this TTFT")
    parser.add_argument("--report", help="write every request's record and the summary "
                                         "here, as JSON")
    parser.add_argument("--plot", help="draw the TTFT distribution, over time and against "
                                       "the load here, as PNG (needs the loadtest extra)")
    parser.add_argument("--seed", type=_bounded(int, 0, 2**32), default=0,
                        help="seed of the open loop's arrivals (default 0)")
    parser.add_argument("--max-inflight", type=_bounded(int, 1, MAX_CONCURRENCY), default=1000,
                        help="open loop: requests in flight at most; later arrivals wait and "
                             "are reported late (default 1000)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return _load_test(args)
    except KeyboardInterrupt:  # before the run's own Ctrl-C handling is in place
        sys.stderr.write("\nloadtest: interrupted\n")
        return 130


def _load_test(args: argparse.Namespace) -> int:
    from tools.loadtest import Options, run_loadtest
    from tools.loadtest_run import Load

    headers = dict(args.header)
    authorization = any(name.lower() == "authorization" for name in headers)
    if args.key and authorization:
        sys.stderr.write("hello-ship: loadtest: give the key once: --key or an Authorization "
                         "header\n")
        return 2
    key = args.key
    if key is None and not authorization and (from_env := os.environ.get(KEY_VARIABLE)):
        try:
            key = _key(from_env)
        except argparse.ArgumentTypeError as problem:
            sys.stderr.write(f"hello-ship: loadtest: ${KEY_VARIABLE} {problem}\n")
            return 2
    if args.rate:
        loads = [Load("rate", value) for value in args.rate]
    else:
        loads = [Load("concurrency", value) for value in args.concurrency or [1]]
    return run_loadtest(Options(
        url=args.url, api=args.api, loads=loads, requests=args.requests,
        duration_s=args.duration, warmup=args.warmup, prompts=args.prompts,
        max_tokens=args.max_tokens, model=args.model, headers=headers, key=key,
        timeout_s=args.timeout,
        slo_ttft_ms=args.slo_ttft_ms, report=args.report, plot=args.plot, seed=args.seed,
        max_inflight=args.max_inflight))


TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110)


# argparse types: a bad value is a usage error (exit status 2) naming the flag. The
# comparisons are written so that nan fails them.
def _bounded(kind: Callable[[str], Any], low: float, high: float,
             low_open: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        above = value > low if low_open else value >= low
        if not (above and value <= high):
            bound = "more than" if low_open else "at least"
            raise argparse.ArgumentTypeError(f"must be {bound} {low:g} and at most {high:g}, "
                                             f"got {text!r}")
        return value
    return parse


_concurrency = _bounded(int, 1, MAX_CONCURRENCY)
_rate = _bounded(float, 0, MAX_RATE, low_open=True)


def _list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [item(part.strip()) for part in text.split(",")]
    return parse


def _header(text: str) -> tuple[str, str]:
    from tools.loadtest_http import FRAMING

    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not TOKEN.fullmatch(name):
        # The text itself is not echoed: it may hold a credential.
        raise argparse.ArgumentTypeError("must be 'Name: value' with a name of letters, "
                                         "digits and -")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError("a header cannot hold a line break or a control "
                                         "character")
    if name.lower() in FRAMING:
        raise argparse.ArgumentTypeError(f"{name} is set by the load tester itself")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"the value of {name} has characters HTTP headers "
                                         "cannot carry") from None
    return name, value


def _key(text: str) -> str:
    """A bearer token goes in a header as it is: printable ASCII only."""
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError("must be printable ASCII without spaces")
    return text
