"""`hello-ship loadtest URL`: a load test from start to exit status.

The target is checked before the clock starts (it must accept a connection; an OpenAI-style
target without `--model` is asked for its models), then each level runs, then the table, the
JSON report and the plot. Ctrl-C stops sending, leaves the requests in flight unfinished and
still prints and writes what was measured.

Exit status: 0 when requests succeeded; 1 when none did (every finished request failed, or
none was measured); 2 when the run could not start (a bad URL or prompts file, an unreachable
target) or its report or plot could not be written; 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx2

from tools.loadtest_http import Client, Target, TargetError, connect_error
from tools.loadtest_plot import EXTRA_HINT, available, write_plot
from tools.loadtest_progress import LiveProgress
from tools.loadtest_prompts import BUILTIN, PromptsError, load_prompts
from tools.loadtest_report import RunFacts, report, write_report, write_table
from tools.loadtest_run import LevelResult, Load, Plan, Run
from tools.loadtest_sse import DIALECTS

INTERRUPTED = 130
ENDPOINTS = {"hello-ship": "/chat/stream", "openai": "/chat/completions"}


class CannotStart(Exception):
    """Exit status 2 with this message."""


@dataclass(frozen=True)
class Options:
    url: str
    api: str | None
    loads: Sequence[Load]
    requests: int
    duration_s: float
    warmup: int = 0
    prompts: str | None = None
    max_tokens: int | None = None
    model: str | None = None
    headers: Mapping[str, str] | None = None
    key: str | None = None
    timeout_s: float = 120.0
    slo_ttft_ms: float | None = None
    report: str | None = None
    plot: str | None = None
    seed: int = 0
    max_inflight: int = 1000

    def shown(self) -> dict[str, Any]:
        """For the report: every option, with no credential in it."""
        return {
            "loads": [{"kind": load.kind, "value": load.value} for load in self.loads],
            "requests": self.requests, "duration_s": self.duration_s, "warmup": self.warmup,
            "prompts": self.prompts or "built-in", "max_tokens": self.max_tokens,
            "model": self.model, "header_names": sorted(self.headers or {}),
            "key": self.key is not None, "timeout_s": self.timeout_s,
            "slo_ttft_ms": self.slo_ttft_ms, "seed": self.seed,
            "max_inflight": self.max_inflight,
        }


def endpoint(url: str, api: str | None) -> tuple[Target, str]:
    """The target and its dialect: a URL naming an endpoint is used as it is; a base URL
    gets the endpoint of `api` (hello-ship's `/chat/stream` by default)."""
    target = Target.parse(url)
    path, _, query = target.path.partition("?")
    path = path.rstrip("/")
    named = next((name for name, end in ENDPOINTS.items() if path.endswith(end)), None)
    dialect = api or named or "hello-ship"
    if named is not None:
        return target, dialect
    if dialect == "openai" and not path.endswith("/v1"):
        path += "/v1"
    return target.with_path(path + ENDPOINTS[dialect] + (f"?{query}" if query else "")), dialect


def run_loadtest(options: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if options.plot and not options.plot.lower().endswith(".png"):
            raise CannotStart("--plot writes a PNG file: give a name ending in .png")
        if options.plot and not available():
            raise CannotStart(EXTRA_HINT)
        for path in (options.report, options.plot):
            if path and not os.access(Path(path).parent, os.W_OK):
                raise CannotStart(f"cannot write {path}: its directory does not exist or "
                                  "is not writable")
        target, dialect = endpoint(options.url, options.api)
        prompts = load_prompts(options.prompts) if options.prompts else BUILTIN
    except (CannotStart, TargetError, PromptsError) as problem:
        err.write(f"hello-ship: loadtest: {problem}\n")
        return 2
    _more_open_files()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(options, target, dialect, prompts, out, err))


def request_headers(options: Options) -> dict[str, str]:
    """The headers every request carries: the key as a bearer token, unless an Authorization
    header was given (which the command line allows only without --key)."""
    headers = dict(options.headers or {})
    if options.key and not any(name.lower() == "authorization" for name in headers):
        headers["Authorization"] = f"Bearer {options.key}"
    return headers


async def _main(options: Options, target: Target, dialect: str, prompts: Sequence[Any],
                out: TextIO, err: TextIO) -> int:
    headers = request_headers(options)
    client = Client(target, headers)
    stop = asyncio.Event()
    checking = asyncio.current_task()
    running = False

    def interrupted() -> None:
        if stop.is_set():  # the second Ctrl-C: quit now, whatever is being written
            err.write("loadtest: quit\n")
            out.flush()
            err.flush()
            os._exit(INTERRUPTED)
        stop.set()
        if running:
            err.write("\nloadtest: interrupted; Ctrl-C again to quit at once\n")
        elif checking is not None:
            checking.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        try:
            model = await _check_target(client, target, dialect, headers, options)
        except CannotStart as problem:
            err.write(f"hello-ship: loadtest: {problem}\n")
            return 2
        except asyncio.CancelledError:
            err.write("\nloadtest: interrupted before the run started\n")
            return INTERRUPTED
        plan = Plan(client, DIALECTS[dialect], prompts, options.loads, options.requests,
                    options.duration_s, options.warmup, options.timeout_s, options.max_tokens,
                    model, None if options.slo_ttft_ms is None else options.slo_ttft_ms / 1000,
                    options.max_inflight, options.seed)
        facts = RunFacts(target.url, dialect, model, datetime.datetime.now(datetime.UTC),
                         time.perf_counter())
        running = True
        levels = await Run(plan, LiveProgress(err, err.isatty()), stop).execute()
    finally:
        client.close()
        # Python's own handler again: a Ctrl-C while the files are written stops at once.
        loop.remove_signal_handler(signal.SIGINT)
    write_table(out, target.url, dialect, levels)
    out.flush()
    written = _write_files(options, facts, levels, err)
    if any(level.interrupted for level in levels):
        return INTERRUPTED
    if not written:
        return 2
    if not sum(level.summary.ok for level in levels):
        if not sum(level.summary.requests for level in levels):
            err.write("hello-ship: loadtest: no request was measured (is --duration shorter "
                      "than the warm-up?)\n")
        return 1
    return 0


async def _check_target(client: Client, target: Target, dialect: str, headers: dict[str, str],
                        options: Options) -> str | None:
    """Before the clock starts: the target takes a connection; an OpenAI-style target without
    --model names its first model. Returns the model to ask for."""
    try:
        await client.probe()
    except OSError as error:
        raise CannotStart(f"cannot connect to {target.url}: "
                          f"{connect_error(error).removeprefix('connect ')}") from None
    if dialect == "openai" and options.model is None:
        return await _first_model(target, headers, options.timeout_s)
    return options.model


async def _first_model(target: Target, headers: dict[str, str], timeout_s: float) -> str:
    url = target.url.split("?")[0].removesuffix("/chat/completions") + "/models"
    hint = "give --model: "
    try:
        async with httpx2.AsyncClient(timeout=min(timeout_s, 30.0), verify=target.tls or True,
                                      headers=headers) as http:
            response = await http.get(url)
    except httpx2.HTTPError as error:
        raise CannotStart(f"{hint}{url} could not be read ({type(error).__name__})") from None
    try:
        models = response.json()["data"]
        return str(models[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise CannotStart(f"{hint}{url} answered {response.status_code} without a model "
                          "list") from None


def _write_files(options: Options, facts: RunFacts, levels: Sequence[LevelResult],
                 err: TextIO) -> bool:
    ok = True
    if options.report:
        try:
            write_report(options.report, report(facts, options.shown(), levels))
            err.write(f"loadtest: report written to {options.report}\n")
        except OSError as error:
            err.write(f"hello-ship: loadtest: cannot write {options.report}: "
                      f"{error.strerror}\n")
            ok = False
    if options.plot:
        try:
            write_plot(options.plot, f"{facts.target} ({facts.dialect})", levels,
                       facts.clock_start)
            err.write(f"loadtest: plot written to {options.plot}\n")
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            err.write(f"hello-ship: loadtest: cannot write {options.plot}: {reason}\n")
            ok = False
    return ok


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _more_open_files() -> None:
    """Each stream in flight holds a socket: raise the soft limit on open files to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
