"""Every Prometheus metric of the service, defined once.

Labels are small closed sets: route names from the configuration, the endpoint, outcomes,
our own error codes and exception class names. Never a tenant id, a key, or anything a
caller typed. Under `hello-ship serve --workers N` each value lives in a file shared by the
workers (prometheus-client's multiprocess mode), so these objects must be created after
`PROMETHEUS_MULTIPROC_DIR` is set: importing this module is that moment.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# A `_created` series per labelled child would nearly double the scrape, and the multiprocess
# mode of `--workers N` has none: both modes expose the same series this way.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Time to first token spans a cached answer (tens of ms) to a cold, long prompt (a minute).
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)
# Token gaps: a burst is sub-millisecond, a stall that nearly trips IDLE_TIMEOUT_S is 30 s.
GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A whole answer: a refusal in 50 ms to a long answer near REQUEST_TIMEOUT_S.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

TTFT = Histogram(
    "hello_ship_ttft_seconds",
    "Request received to first token sent to the client.",
    ["route", "endpoint"], buckets=TTFT_BUCKETS,
)
INTER_TOKEN = Histogram(
    "hello_ship_inter_token_seconds",
    "Gap between two token frames of one answer, as sent to the client.",
    ["route", "endpoint"], buckets=GAP_BUCKETS,
)
DURATION = Histogram(
    "hello_ship_request_duration_seconds",
    "Request received to response ended, for requests that reached a provider.",
    ["route", "endpoint"], buckets=DURATION_BUCKETS,
)

REQUESTS = Counter(
    "hello_ship_requests",
    "Chat requests by endpoint, answering route, outcome, status class and error code.",
    ["endpoint", "route", "outcome", "status_class", "code"],
)
TOKENS = Counter(
    "hello_ship_tokens",
    "Tokens billed (vendor usage, or estimated), by route and direction (input, output).",
    ["route", "direction"],
)
COST = Counter(
    "hello_ship_cost_usd",
    "Cost of the answers in US dollars, at the configured prices, by answering route.",
    ["route"],
)
RETRIES = Counter(
    "hello_ship_retries",
    "Failed provider attempts followed by a retry on the same route.",
    ["route", "error_class"],
)
FALLBACKS = Counter(
    "hello_ship_fallbacks",
    "Answers not from the primary route: tier fallback (a later route answered), cache (no "
    "route could; a cached answer was sent, route is cache) or static (no route could; the "
    "degraded copy was sent, route is the primary).",
    ["route", "tier"],
)
HEDGES_STARTED = Counter(
    "hello_ship_hedges_started",
    "Hedges: a route asked beside a slower one that had not started its answer within "
    "HEDGE_AFTER_MS, by the route asked.",
    ["route"],
)
HEDGES_WON = Counter(
    "hello_ship_hedges_won",
    "Hedges that started their answer before the slower route did, by the route asked.",
    ["route"],
)
BREAKER_TRANSITIONS = Counter(
    "hello_ship_breaker_transitions",
    "Circuit breaker moves, by route and the state moved to.",
    ["route", "state"],
)
GUARD_HITS = Counter(
    "hello_ship_guardrail_hits",
    "Guardrail findings by direction (input, output), detector (email, api_key, "
    "blocked_pattern_0, moderation, ...) and the action taken.",
    ["direction", "detector", "action"],
)
QUOTA_REFUSALS = Counter(
    "hello_ship_quota_refusals",
    "Chat requests refused by a tenant's rate limit, stream limit or budget.",
    ["limit"],
)
QUOTA_STORE_ERRORS = Counter(
    "hello_ship_quota_store_errors",
    "Calls to the quota store (Redis) that failed, and the policy applied; operation "
    "admit_released counts admissions whose reply was lost, given back at once.",
    ["operation", "policy"],
)
DISCONNECTS = Counter(
    "hello_ship_client_disconnects",
    "Clients that left before their answer ended, by endpoint and phase "
    "(before_first_token, after_first_token).",
    ["endpoint", "phase"],
)
CONNECTIONS_REFUSED = Counter(
    "hello_ship_connections_refused",
    "Connections closed before a request reached the service, by reason (header_too_large, "
    "header_timeout, idle, max_connections, bad_request, upgrade).",
    ["reason"],
)
STREAM_ERRORS = Counter(
    "hello_ship_stream_errors",
    "Answers that failed after their first token reached the client.",
    ["route", "endpoint", "code"],
)

ACTIVE_STREAMS = Gauge(
    "hello_ship_active_streams",
    "Answers in flight (pipelines running), by endpoint.",
    ["endpoint"], multiprocess_mode="livesum",
)
# The vendors' own rate limits, read from their response headers (kind: requests, tokens,
# input_tokens, output_tokens). The last report wins, whichever worker saw it.
QUOTA_LIMIT = Gauge(
    "hello_ship_provider_quota_limit",
    "The vendor's rate limit for the route in its current window, as it last reported it.",
    ["route", "kind"], multiprocess_mode="mostrecent",
)
QUOTA_REMAINING = Gauge(
    "hello_ship_provider_quota_remaining",
    "What is left of the vendor's rate limit for the route, as it last reported it.",
    ["route", "kind"], multiprocess_mode="mostrecent",
)
QUOTA_RESET = Gauge(
    "hello_ship_provider_quota_reset_timestamp_seconds",
    "When the vendor's rate-limit window for the route resets (Unix time), as last reported.",
    ["route", "kind"], multiprocess_mode="mostrecent",
)
BREAKER_STATE = Gauge(
    "hello_ship_breaker_state",
    "Circuit breaker state per route: 0 closed, 1 half_open, 2 open (the worst worker's).",
    ["route"], multiprocess_mode="livemax",
)
BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
# Keys rotated without a restart (config.reload): result is applied or failed.
CONFIG_RELOADS = Counter(
    "hello_ship_config_reloads",
    "Re-reads of the config file and key files, by result (applied, failed).",
    ["result"],
)
# Labelled (trigger: start, sighup, file_changed) like every metric here: an unlabelled one
# would open its multiprocess file on import, before `serve` has checked the directory.
CONFIG_LOADED = Gauge(
    "hello_ship_config_last_reload_success_timestamp_seconds",
    "When the running configuration was last read successfully (Unix time), by what made it "
    "read the files; the latest of the live workers'.",
    ["trigger"], multiprocess_mode="livemax",
)

# The answer cache (cache.answers): one lookup counts a result for each kind it tried.
CACHE_LOOKUPS = Counter(
    "hello_ship_cache_lookups",
    "Answer cache lookups by mode (fallback, first), kind of match tried (exact, semantic, "
    "lexical) and outcome (hit, miss).",
    ["mode", "kind", "outcome"],
)
CACHE_HIT_SIMILARITY = Histogram(
    "hello_ship_cache_hit_similarity",
    "Similarity of the question a cached answer was served for to the one it was written "
    "for: cosine (semantic), estimated Jaccard (lexical), 1 (exact).",
    ["kind"], buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0),
)
CACHE_WRITES = Counter(
    "hello_ship_cache_writes",
    "Answers offered to the cache, by outcome: stored, dropped (the write queue was full), "
    "failed (the store did not take it).",
    ["outcome"],
)
CACHE_ERRORS = Counter(
    "hello_ship_cache_errors",
    "Answer cache operations that failed or timed out (lookup, store, embed, clear): each a "
    "miss or a dropped write, never a failed request.",
    ["operation"],
)


class GapTally:
    """The inter-token gaps of one answer, tallied per bucket and added to `INTER_TOKEN` once
    when the answer ends. Observing every token costs 1-2 us in memory and 3-7 us in the
    multiprocess files of `--workers N` (a locked write to a shared file for the bucket and
    another for the sum); a tally costs a bisect and an addition."""

    __slots__ = ("_counts", "_total")

    def __init__(self) -> None:
        self._counts = [0] * (len(GAP_BUCKETS) + 1)  # the last one is +Inf
        self._total = 0.0

    def add(self, gap: float) -> None:
        self._counts[bisect_left(GAP_BUCKETS, gap)] += 1  # buckets are `le`: gap <= bound
        self._total += gap

    def record(self, route: str, endpoint: str) -> None:
        if not any(self._counts):
            return
        histogram = INTER_TOKEN.labels(route, endpoint)
        # Histogram.observe takes one value; adding counts to a bucket has no public call.
        # The values are those observe() itself increments, so the exposition (cumulative
        # buckets, _count, _sum) is the same as observing each gap.
        for bucket, count in zip(histogram._buckets, self._counts, strict=True):
            if count:
                bucket.inc(count)
        histogram._sum.inc(self._total)
        self._counts = [0] * len(self._counts)
        self._total = 0.0
