"""A load level's figures, with the definitions of vLLM's `benchmark_serving` and llmperf.

- TTFT: from the request being sent to the first frame carrying answer text.
- ITL (inter-token latency): the gaps between frames carrying text, pooled over all requests.
  It is per frame: when frames carry several tokens, `tokens_per_frame` says so.
- TPOT: (end-to-end latency - TTFT) / (output tokens - 1), per request with 2 or more tokens.
- Output tokens: the server's own count where it reports one (hello-ship's `done` usage,
  OpenAI's usage chunk), else the frames carrying text.
- Throughput over the level's window (first request sent to last request closed): requests
  that succeeded per second (failures are counted apart), output tokens per second, and
  goodput, the requests per second that succeeded with a TTFT within the SLO.

Warm-up requests and requests cut short by an interrupt are left out of every figure.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tools.loadtest_record import RequestRecord

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution | None:
        if not values:
            return None
        if len(values) == 1:
            cuts = [values[0]] * 99
        else:  # linear interpolation between closest ranks, as numpy.percentile does
            cuts = statistics.quantiles(values, n=100, method="inclusive")
        p50, p90, p95, p99 = (cuts[p - 1] for p in PERCENTILES)
        return cls(len(values), statistics.fmean(values), p50, p90, p95, p99, max(values))

    def scaled(self, factor: float) -> dict[str, float | int]:
        """As a dict with every figure but the count multiplied (seconds to milliseconds)."""
        return {key: value if key == "count" else value * factor
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Summary:
    requests: int  # finished, well or not
    ok: int
    failed: int
    unfinished: int  # still running when the run was interrupted
    window_s: float
    requests_per_s: float  # that succeeded
    slo_ttft_s: float | None
    goodput_per_s: float | None
    output_tokens: int
    tokens_per_s: float
    token_source: str  # usage | frames | mixed
    tokens_per_frame: float | None
    ttft: Distribution | None
    itl: Distribution | None
    tpot: Distribution | None
    e2e: Distribution | None
    request_tokens_per_s: Distribution | None
    errors: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        ms = 1000.0
        return {
            "requests": self.requests, "ok": self.ok, "failed": self.failed,
            "unfinished": self.unfinished, "window_s": self.window_s,
            "requests_per_s": self.requests_per_s, "slo_ttft_ms": (
                None if self.slo_ttft_s is None else self.slo_ttft_s * ms),
            "goodput_per_s": self.goodput_per_s, "output_tokens": self.output_tokens,
            "tokens_per_s": self.tokens_per_s, "token_source": self.token_source,
            "tokens_per_frame": self.tokens_per_frame,
            "ttft_ms": _scaled(self.ttft, ms), "itl_ms": _scaled(self.itl, ms),
            "tpot_ms": _scaled(self.tpot, ms), "e2e_ms": _scaled(self.e2e, ms),
            "request_tokens_per_s": _scaled(self.request_tokens_per_s, 1.0),
            "errors": self.errors,
        }


def _scaled(distribution: Distribution | None, factor: float) -> dict[str, float | int] | None:
    return None if distribution is None else distribution.scaled(factor)


def summarize(records: Sequence[RequestRecord], slo_ttft_s: float | None = None) -> Summary:
    measured = [r for r in records if not r.warmup and r.sent is not None]
    closed = [r for r in measured if r.closed is not None]
    ok = [r for r in closed if r.ok]
    window = (max(r.closed for r in closed if r.closed is not None)
              - min(r.sent for r in closed if r.sent is not None)) if closed else 0.0
    per_s = (lambda count: count / window) if window > 0 else (lambda count: 0.0)
    ttfts = [ttft for r in ok if (ttft := r.ttft) is not None]
    good = None if slo_ttft_s is None else per_s(sum(
        1 for r in ok if (ttft := r.ttft) is not None and ttft <= slo_ttft_s))
    tokens = sum(r.tokens for r in ok)
    frames = sum(r.text_frames for r in ok)
    sources = {r.output_tokens is not None for r in ok}
    token_source = "mixed" if len(sources) > 1 else "usage" if sources == {True} else "frames"
    errors = Counter(r.error for r in closed if r.error is not None)
    return Summary(
        requests=len(closed), ok=len(ok), failed=len(closed) - len(ok),
        unfinished=len(measured) - len(closed), window_s=window,
        requests_per_s=per_s(len(ok)), slo_ttft_s=slo_ttft_s, goodput_per_s=good,
        output_tokens=tokens, tokens_per_s=per_s(tokens), token_source=token_source,
        tokens_per_frame=tokens / frames if frames else None,
        ttft=Distribution.of(ttfts),
        itl=Distribution.of([gap for r in ok for gap in r.gaps]),
        tpot=Distribution.of([tpot for r in ok if (tpot := r.tpot) is not None]),
        e2e=Distribution.of([e2e for r in ok if (e2e := r.e2e) is not None]),
        request_tokens_per_s=Distribution.of(
            [r.tokens / e2e for r in ok if (e2e := r.e2e) is not None and e2e > 0]),
        errors=dict(errors.most_common()),
    )
