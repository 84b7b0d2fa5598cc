"""The inter-token tally adds to the histogram exactly what observing each gap would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.metrics import GAP_BUCKETS, INTER_TOKEN, GapTally

# The bucket bounds themselves (a gap equal to a bound is in that bucket), around them, and
# past the last one.
GAPS = st.lists(st.sampled_from(GAP_BUCKETS) | st.floats(0, 60, allow_nan=False), max_size=40)


def samples_of(route: str) -> dict[tuple[str, str], float]:
    """What a scrape shows of the route's histogram: cumulative buckets, count and sum."""
    return {(sample.name, sample.labels.get("le", "")): sample.value
            for family in INTER_TOKEN.collect()
            for sample in family.samples if sample.labels.get("route") == route}


@settings(max_examples=150, deadline=None)
@given(GAPS)
def test_a_tally_equals_observing_every_gap(gaps: list[float]) -> None:
    tallied, observed = "tally/a", "tally/b"
    before = samples_of(tallied), samples_of(observed)
    tally = GapTally()
    for gap in gaps:
        tally.add(gap)
        INTER_TOKEN.labels(observed, "stream").observe(gap)
    tally.record(tallied, "stream")
    tally.record(tallied, "stream")  # recorded once: a second call adds nothing
    after_tallied, after_observed = samples_of(tallied), samples_of(observed)

    def added(after: dict[tuple[str, str], float], start: dict[tuple[str, str], float],
              ) -> dict[tuple[str, str], float]:
        return {key: value - start.get(key, 0.0) for key, value in after.items()}

    tallied_added, observed_added = added(after_tallied, before[0]), added(after_observed,
                                                                           before[1])
    sum_key = ("hello_ship_inter_token_seconds_sum", "")
    # Every bucket and the count exactly; the sum up to float rounding (one addition of the
    # total, against one per gap).
    assert tallied_added.pop(sum_key, 0.0) == pytest.approx(observed_added.pop(sum_key, 0.0),
                                                            abs=1e-9)
    assert tallied_added == observed_added
