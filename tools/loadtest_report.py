"""A load test's results: the table printed at the end, and the JSON report with every
request's record (the schema is `loadtest-report.schema.json`, next to this module)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from tools.loadtest_record import RequestRecord
from tools.loadtest_run import LevelResult
from tools.loadtest_stats import Distribution

SCHEMA = "hello-ship.loadtest/1"
SCHEMA_FILE = Path(__file__).with_name("loadtest-report.schema.json")
ROWS = (("TTFT ms", "ttft", 1000.0), ("ITL ms, per frame", "itl", 1000.0),
        ("TPOT ms", "tpot", 1000.0), ("end-to-end ms", "e2e", 1000.0),
        ("tokens/s per request", "request_tokens_per_s", 1.0))


def write_table(out: TextIO, target: str, dialect: str, levels: Sequence[LevelResult]) -> None:
    for level in levels:
        _level_table(out, target, dialect, level)
    if len(levels) > 1:
        _sweep_table(out, levels)


def _level_table(out: TextIO, target: str, dialect: str, level: LevelResult) -> None:
    s = level.summary
    cut = " (interrupted: partial results)" if level.interrupted else ""
    out.write(f"\n{target} ({dialect}), {level.load}{cut}\n")
    unfinished = f", {s.unfinished} unfinished" if s.unfinished else ""
    out.write(f"  {s.requests} requests: {s.ok} ok, {s.failed} failed{unfinished}, "
              f"in {s.window_s:.2f} s: {s.requests_per_s:.2f} successful requests/s")
    out.write("\n")
    if s.goodput_per_s is not None and s.slo_ttft_s is not None:
        out.write(f"  goodput {s.goodput_per_s:.2f} requests/s with TTFT <= "
                  f"{s.slo_ttft_s * 1000:g} ms\n")
    if level.achieved_rate is not None:
        late = level.late.p99 * 1000 if level.late is not None else 0.0
        drawn = level.scheduled_rate or 0.0
        out.write(f"  sent {level.achieved_rate:.2f} requests/s ({level.load.value:g} asked; "
                  f"the Poisson arrivals drawn: {drawn:.2f}/s); late by {late:.1f} ms at "
                  "p99\n")
    if level.unsent:
        out.write(f"  {level.unsent} arrivals not sent: --max-inflight requests were in flight "
                  "until the duration ended\n")
    source = {"usage": "the server's count", "frames": "frames with text, the server gave no "
              "count", "mixed": "the server's count where given"}[s.token_source]
    per_frame = (f"; {s.tokens_per_frame:.2f} tokens per frame"
                 if s.tokens_per_frame is not None else "")
    out.write(f"  {s.output_tokens:,} output tokens ({source}): {s.tokens_per_s:,.1f} tokens/s"
              f"{per_frame}\n")
    if s.ttft is not None:
        out.write(f"\n  {'':22}" + "".join(f"{h:>10}" for h in
                                           ("p50", "p90", "p95", "p99", "max", "mean")) + "\n")
        for label, name, factor in ROWS:
            distribution: Distribution | None = getattr(s, name)
            if distribution is not None:
                figures = (distribution.p50, distribution.p90, distribution.p95,
                           distribution.p99, distribution.max, distribution.mean)
                out.write(f"  {label:22}" + "".join(f"{v * factor:10.1f}" for v in figures)
                          + "\n")
    if s.errors:
        out.write("\n  errors:\n")
        for code, count in s.errors.items():
            out.write(f"  {count:8} {code}\n")
    lag = level.client.loop_lag
    lag_text = f"; event loop late by {lag.p99 * 1000:.1f} ms at p99" if lag else ""
    out.write(f"\n  client: CPU {level.client.cpu_share:.0%} of a core{lag_text}\n")
    if (warning := level.client.warning()) is not None:
        out.write(f"  WARNING: {warning}\n")


def _sweep_table(out: TextIO, levels: Sequence[LevelResult]) -> None:
    out.write(f"\n{'load':18}{'ok req/s':>9}{'tokens/s':>11}{'TTFT p50':>10}{'TTFT p99':>10}"
              f"{'ITL p50':>9}{'failed':>8}\n")
    for level in levels:
        s = level.summary
        ttft = s.ttft or _NONE
        itl = s.itl or _NONE
        out.write(f"{level.load!s:18}{s.requests_per_s:9.2f}{s.tokens_per_s:11.1f}"
                  f"{ttft.p50 * 1000:10.1f}{ttft.p99 * 1000:10.1f}{itl.p50 * 1000:9.1f}"
                  f"{s.failed:8}\n")


_NONE = Distribution(0, float("nan"), *(float("nan"),) * 5)


@dataclass(frozen=True)
class RunFacts:
    """What the report says of the run as a whole."""

    target: str
    dialect: str
    model: str | None  # asked of an OpenAI-style target
    started_at: datetime.datetime
    clock_start: float  # the same moment on the run's clock (time.perf_counter)


def report(run: RunFacts, options: Mapping[str, Any],
           levels: Sequence[LevelResult]) -> dict[str, Any]:
    """The JSON report: the run's options, each level's summary and every request's record,
    with times in milliseconds from the start of the run."""
    clock_start = run.clock_start
    return {
        "schema": SCHEMA,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "target": {"url": run.target, "api": run.dialect, "model": run.model},
        "options": dict(options),
        "interrupted": any(level.interrupted for level in levels),
        "levels": [{
            "load": {"kind": level.load.kind, "value": level.load.value},
            "started_ms": (level.started - clock_start) * 1000,
            "interrupted": level.interrupted,
            "achieved_rate": level.achieved_rate,
            "scheduled_rate": level.scheduled_rate,
            "unsent": level.unsent,
            "late_ms": None if level.late is None else level.late.scaled(1000.0),
            "summary": level.summary.to_json(),
            "client": level.client.to_json(),
        } for level in levels],
        "requests": [_record(record, clock_start)
                     for level in levels for record in level.records],
    }


def _record(r: RequestRecord, clock_start: float) -> dict[str, Any]:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "index": r.index, "level": r.level, "warmup": r.warmup,
        "due_ms": ms(r.due - clock_start),
        "sent_ms": ms(None if r.sent is None else r.sent - clock_start),
        "ttft_ms": ms(r.ttft), "e2e_ms": ms(r.e2e), "tpot_ms": ms(r.tpot),
        "ok": r.ok, "finished": r.closed is not None, "status": r.status, "error": r.error,
        "request_id": r.request_id, "new_connection": r.new_connection,
        "text_frames": r.text_frames, "output_tokens": r.output_tokens,
        "itl_ms": [round(gap * 1000, 3) for gap in r.gaps],
    }


def write_report(path: str, document: Mapping[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))

