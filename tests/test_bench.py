"""The benchmarks still run: each, briefly, prints its table with figures in it. (What the
figures are is for the docs, measured on a quiet machine, never asserted here.)"""

from __future__ import annotations

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


def test_the_load_testers_own_benchmark_reads_a_paced_server() -> None:
    lines = bench("bench.loadtest_client", "--levels", "10", "--seconds", "0.5",
                  "--tokens", "20")
    (row,) = [line.split() for line in lines if line.split()[:1] == ["10"]]
    frames_per_s, itl_ms = float(row[1].replace(",", "")), float(row[-1])
    assert frames_per_s > 0 and 4 <= itl_ms <= 20  # the server writes a frame every 5 ms
