"""`--plot out.png`: the TTFT distribution (histogram and CDF), TTFT over the run, and for a
sweep TTFT against the load. matplotlib is an optional extra: `pip install
'hello-ship[loadtest]'`."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tools.loadtest_run import LevelResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

EXTRA_HINT = "--plot needs matplotlib: pip install 'hello-ship[loadtest]'"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plot(path: str, title: str, levels: Sequence[LevelResult], clock_start: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    histogram, cdf, over_time, fourth = axes.flat
    figure.suptitle(title, fontsize=11)
    measured = [[r for r in level.records if r.ok and not r.warmup and r.ttft is not None]
                for level in levels]
    everything = [r.ttft * 1000 for ok in measured for r in ok if r.ttft is not None]
    bins = min(50, max(10, len(everything) // 5))
    low, high = (min(everything), max(everything)) if everything else (0.0, 0.0)
    # One set of bins for every level, so their histograms compare bar for bar.
    edges = [low + (high - low) * i / bins for i in range(bins + 1)] if high > low else bins
    for level, ok in zip(levels, measured, strict=True):
        ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
        if not ttfts:
            continue
        label = str(level.load)
        histogram.hist(ttfts, bins=edges, alpha=0.6, label=label)
        ordered = sorted(ttfts)
        cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
        over_time.scatter([(r.sent or clock_start) - clock_start for r in ok], ttfts, s=6,
                          label=label)
    histogram.set(title="TTFT distribution", xlabel="TTFT (ms)", ylabel="requests")
    cdf.set(title="TTFT CDF", xlabel="TTFT (ms)", ylabel="share of requests", ylim=(0, 1.02))
    cdf.grid(alpha=0.3)
    over_time.set(title="TTFT over the run", xlabel="sent at (s)", ylabel="TTFT (ms)")
    if len(levels) > 1:
        _against_load(fourth, levels)
    else:
        _itl(fourth, levels)
    for axis in (histogram, cdf, over_time):
        if len(levels) > 1:
            axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _against_load(axis: Axes, levels: Sequence[LevelResult]) -> None:
    points = [(level.load.value, level.summary.ttft) for level in levels
              if level.summary.ttft is not None]
    values = [value for value, _ in points]
    for name in ("p50", "p90", "p99"):
        axis.plot(values, [getattr(t, name) * 1000 for _, t in points],
                  marker="o", label=f"TTFT {name}")
    kind = levels[0].load.kind
    axis.set(title=f"TTFT against {kind}",
             xlabel="concurrent requests" if kind == "concurrency" else "requests per second",
             ylabel="TTFT (ms)")
    if len(values) > 1 and min(values) > 0 and max(values) / min(values) >= 10:
        axis.set_xscale("log")
        axis.minorticks_off()
    axis.set_xticks(values, [f"{value:g}" for value in values])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def _itl(axis: Axes, levels: Sequence[LevelResult]) -> None:
    gaps = [gap * 1000 for level in levels for r in level.records
            if r.ok and not r.warmup for gap in r.gaps]
    if gaps:
        axis.hist(gaps, bins=50, color="tab:green", alpha=0.7)
    axis.set(title="inter-token latency (per frame)",
             xlabel="ITL (ms)", ylabel="frames")
