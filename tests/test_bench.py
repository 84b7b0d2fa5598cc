"""The benchmarks still run: each, briefly, prints its table with figures in it. (What the
figures are is for the docs, measured on a quiet machine, never asserted here.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(module: str, *args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_relay_benchmark_drives_the_service_with_the_load_tester() -> None:
    lines = bench("bench.relay", "--seconds", "0.5", "--repeat", "1", "--levels", "2",
                  "--quiet-streams", "5", "--endpoints", "stream,openai")
    rows = [line.split() for line in lines if line.split()[:2] in (["stream", "2"],
                                                                   ["openai", "2"])]
    assert len(rows) == 2, lines
    for row in rows:  # frames/s, streams/s and TTFT measured, the load generator's CPU shown
        assert float(row[2].replace(",", "")) > 0 and float(row[3].replace(",", "")) > 0
        assert float(row[4]) > 0 and row[6].endswith("%")
    assert lines[-1].startswith("memory: 5 open quiet streams: ")


def test_the_gateway_benchmark_sets_the_service_beside_the_vendor() -> None:
    lines = bench("bench.gateway", "--quick")
    assert lines[0].startswith("machine: ") and "cores, Python " in lines[0]
    header = next(index for index, line in enumerate(lines) if line.startswith("| |"))
    assert lines[header].split(" | ")[1:] == [
        "direct to the fake vendor", "hello-ship, defaults (output guard on)",
        "hello-ship, output guard off |"]
    rows = {cells[0]: cells[1:] for line in lines[header + 2:] if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}

    def number(cell: str) -> float:
        return float(re.match(r"[+]?([\d,.]+)", cell)[1].replace(",", ""))  # type: ignore[index]

    # TTFT measured directly, added by the service (which adds its own work), as ratios too.
    direct, on, off = rows["added TTFT, 2 paced streams, p50 / p99"]
    assert 45 <= number(direct) < 1000 and direct.endswith("ms (TTFT)")
    for cell in (on, off):
        assert re.fullmatch(r"[+-][\d.]+ / [+-][\d.]+ ms \([\d.]+x / [\d.]+x\)", cell), cell
    for name in ("answers/s, 2 paced streams", "fast answers/s, 2 streams", "peak RSS"):
        assert all(number(cell) > 0 for cell in rows[name]), (name, rows[name])
    for name in ("CPU µs per vendor token, paced, 2 streams",
                 "CPU µs per vendor token, fast, 2 streams"):
        # The fake vendor's own CPU in a short quick run can be below one clock tick (0.0).
        vendor, *service = rows[name]
        assert vendor.endswith("(the vendor's own)") and number(vendor) >= 0, (name, vendor)
        assert all(number(cell) > 0 for cell in service), (name, service)
    assert number(rows["RSS at 20 open streams (guard on)"][1]) > 0
    # What per-token CPU is divided by, and whether core 1 kept up, are printed too.
    text = "\n".join(lines)
    relayed = re.search(r"paced +2 streams: direct ([\d,]+) / (\d+) / ([\d,]+) ", text)
    assert relayed, text
    tokens, answers, frames = (int(group.replace(",", "")) for group in relayed.groups())
    assert tokens == frames == 64 * answers > 0  # the vendor's 64 tokens, one frame each
    shares = r"\d+% / \d+% \([\d.]+ ms\) / [\d.]+"
    assert re.search(rf"fast +2 streams: direct {shares}; on {shares}; off {shares}$", text,
                     re.MULTILINE), text


def test_the_load_testers_own_benchmark_reads_a_paced_server() -> None:
    lines = bench("bench.loadtest_client", "--levels", "10", "--seconds", "0.5",
                  "--tokens", "20")
    (row,) = [line.split() for line in lines if line.split()[:1] == ["10"]]
    frames_per_s, itl_ms = float(row[1].replace(",", "")), float(row[-1])
    assert frames_per_s > 0 and 4 <= itl_ms <= 20  # the server writes a frame every 5 ms


def test_the_cache_benchmark_times_hits_beside_misses_and_what_storing_costs() -> None:
    lines = bench("bench.cache_hits", "--quick")
    assert lines[0].startswith("machine: ") and "cores, Python " in lines[0]
    rows = {cells[0]: cells[1:] for line in lines
            if line.startswith("| ") and not line.startswith("| TTFT")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}

    def number(cell: str) -> float:
        return float(re.match(r"[+]?([\d,.]+)", cell)[1].replace(",", ""))  # type: ignore[index]

    # Each kind's TTFT in ms, in order, as a ratio to the miss's: every answer was checked
    # to be the hit or the miss it is counted as, or the run would have failed.
    for title in ("exact hit", "lexical near-duplicate hit", "miss: the demo model"):
        (name,) = [name for name in rows if name.startswith(title)]
        *cells, ratios = rows[name]
        assert all(cell.endswith(" ms") for cell in cells), (name, cells)
        p50, p90, p99, top = (number(cell) for cell in cells)
        assert 0 < p50 <= p90 <= p99 <= top, (name, cells)
        assert re.fullmatch(r"[\d.]+x / [\d.]+x", ratios), ratios
    assert rows[next(name for name in rows if name.startswith("miss"))][-1] == "1.00x / 1.00x"
    # The cost of storing: CPU per answer with the cache off and on, RSS after the fill.
    off, stored = rows["service CPU per answer"]
    assert number(off) > 0 and number(stored) > 0 and off.endswith(" ms")
    assert re.fullmatch(r"[\d.]+ ms \([+-]\d+ µs, [\d.]+x\)", stored), stored
    assert all(number(cell) > 0 for cell in rows["RSS after the fill (300 entries stored)"])
    text = "\n".join(lines)
    assert re.search(r"^target, a hit's TTFT at most 5 ms p99 with 300 entries: (met|NOT met) "
                     r"\(exact [\d.]+ ms, lexical [\d.]+ ms\)$", text, re.MULTILINE), text
