"""Gateway benchmark: what hello-ship adds in front of a vendor, side by side with the vendor
reached directly, in one run.

A fake OpenAI-compatible vendor (bench/fake_vendor.py: a raw asyncio protocol on uvloop
writing pre-encoded chunk frames) answers 64 tokens, `paced` like a model (the first after
50 ms, then one every 10 ms) or `fast` (all at once). Two real `hello-ship serve` processes,
each with one OpenAI-compatible route to that vendor in a route file, run pinned to core 0
with `taskset`: one with the defaults (the output guard on), one with every output category
allowed (the guard off). `hello-ship loadtest`'s closed loop (tools/loadtest_run.py, raw SSE
over keep-alive connections) asks for `model: default` on `/v1/chat/completions`, from core
1, where the fake vendor runs too; the same requests go straight to the vendor for the
direct column. The three are run in turn, round after round, so the machine's noise hits all.

Figures: added TTFT (each TTFT through hello-ship less the direct median of the same round),
answers per second, the service's CPU per vendor token relayed (its CPU time over the run
divided by the token chunks the vendor wrote in it), peak RSS, and RSS with many streams
open; each hello-ship figure also as a ratio to the direct one where there is one. Printed
with the CPU shares of the fake vendor and of the load generator, which must stay well below
a core for the figures to be the service's, and the CPU the rest of the machine took: a round
during which other processes were busy is run again (`--redo`), and warned about if they
still were. Run: `make bench` (or `.venv/bin/python -m bench.gateway --help`).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from tools.loadtest_http import Client, Target
from tools.loadtest_progress import NoProgress
from tools.loadtest_prompts import BUILTIN
from tools.loadtest_record import RequestRecord
from tools.loadtest_run import LevelResult, Load, Plan, Run
from tools.loadtest_sse import DIALECTS
from tools.loadtest_stats import Distribution

try:
    from uvloop import run
except ImportError:  # pragma: no cover
    from asyncio import run

VENDOR_SCRIPT = Path(__file__).resolve().parent / "fake_vendor.py"
TOKENS, TTFT_MS, TOKEN_MS = 64, 50.0, 10.0
PATH = "/v1/chat/completions"
VENDOR_BUSY = 0.7  # of a core: above it the fake vendor may be what the figures measure
OTHERS_BUSY = 0.1  # cores other processes may take during a run before it is flagged
WARMUP_MIN_S = 2.0  # shorter runs keep every stream's first answer
# The load is one tenant (open mode): its limits are set out of the way, so the figures
# include admission and settlement but never a 429.
ROOMY_LIMITS = {"RPM_PER_TENANT": "10000000", "STREAMS_PER_TENANT": "1000000",
                "DAILY_BUDGET_TOKENS": "1000000000000"}
# Settings of the caller's shell that would change the route or the guard under test.
UNSET = ("LLM_PROVIDER", "PRIMARY_MODEL", "FALLBACK_MODEL", "DISABLED_ROUTES", "MODERATION",
         "HELLO_SHIP_CONFIG")
GUARD_OFF = {"GUARD_OUTPUT_PII": "allow", "GUARD_OUTPUT_SECRETS": "allow"}
TITLES = {"direct": "direct to the fake vendor",
          "on": "hello-ship, defaults (output guard on)",
          "off": "hello-ship, output guard off"}


# --- processes ---------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    """The process's CPU time so far, user and system."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, field_name: str) -> int:
    """`VmRSS` (resident now) or `VmHWM` (the peak) of the process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"{field_name}:\s+(\d+)", status.read())[1])  # type: ignore[index]


def machine_busy_s() -> float:
    """CPU time all cores have spent on processes so far (user and system), and time a
    hypervisor took from them (steal): /proc/stat's first line. Interrupts are left out: the
    benchmark's own loopback traffic is most of them."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (ticks + [0] * 8)[:8]
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split_cores() -> tuple[int, int] | None:
    """The service's core and this process's, which moves onto its own; None when they cannot
    be kept apart (no taskset, or one core)."""
    if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return None
    os.sched_setaffinity(0, {1})
    return 0, 1


def pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: IO[bytes] | None,
                  what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    detail = ""
    if log is not None:
        log.seek(0)
        detail = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"{what} did not start on port {port}\n{detail}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def hello_ship() -> list[str]:
    """The `hello-ship` command installed next to this interpreter; else its module."""
    script = Path(sys.executable).with_name("hello-ship")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def service_env(routes: Path, guard: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in UNSET and not name.startswith("GUARD_")}
    env.update(ROOMY_LIMITS)
    env.update({"HELLO_SHIP_CONFIG": str(routes), "BENCH_VENDOR_KEY": "sk-bench-unused"})
    if guard == "off":
        env.update(GUARD_OFF)
    return env


def write_routes(directory: Path, vendor_port: int) -> Path:
    path = directory / "routes.toml"
    path.write_text('[[routes]]\nprovider = "openai"\nmodel = "bench-model"\n'
                    f'base_url = "http://127.0.0.1:{vendor_port}/v1"\n'
                    'api_key_env = "BENCH_VENDOR_KEY"\n')
    return path


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_service(routes: Path, guard: str, core: int | None) -> Process:
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the process, in main)
    proc = subprocess.Popen(pinned([*hello_ship(), "serve", "--port", str(port)], core),
                            env=service_env(routes, guard), stdout=subprocess.DEVNULL,
                            stderr=log)
    return Process(proc, port, log)


def start_vendor(core: int | None) -> Process:
    port = free_port()
    proc = subprocess.Popen(pinned([sys.executable, str(VENDOR_SCRIPT), "--port", str(port),
                                    "--tokens", str(TOKENS), "--ttft-ms", str(TTFT_MS),
                                    "--token-ms", str(TOKEN_MS)], core))
    wait_for_port(port, proc, None, "the fake vendor")
    return Process(proc, port)


def vendor_get(vendor: Process, path: str) -> dict[str, int]:
    connection = http.client.HTTPConnection("127.0.0.1", vendor.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"the fake vendor answered {path} with {response.status}")
        return dict(json.loads(body))
    finally:
        connection.close()


# --- measuring ---------------------------------------------------------------------------

@dataclass
class Sample:
    """One run against one target."""

    ttfts: list[float]  # seconds, the measured answers
    answers_per_s: float
    wall_s: float
    cpu_s: float  # the service's; for the direct run, the fake vendor's
    vendor_tokens: int  # token chunks the fake vendor wrote during the run
    answers: int  # answers that completed, the warm-up ones too
    client_frames: int  # frames with text the load generator read
    client_tokens: int  # output tokens by the usage the client was sent
    vendor_share: float  # the fake vendor's CPU per wall second
    loadgen_share: float
    loadgen_busy: bool
    loadgen_lag_s: float  # how late its event loop woke, p99
    others_share: float  # cores' worth of CPU the rest of the machine used meanwhile

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_s / self.vendor_tokens * 1e6 if self.vendor_tokens else float("nan")


class StreamsRun(Run):
    """`hello-ship loadtest`'s closed loop, where each stream also goes on past the duration
    until it has had `answers` answers, the first a warm-up when `warm` (left out of the
    figures, as the load tester leaves out its warm-up requests); never past `cap_s`. A
    saturated service answers a stream far slower than the vendor does: a fixed duration
    alone would leave it no answer after the warm-up."""

    def __init__(self, plan: Plan, answers: int, warm: bool, cap_s: float) -> None:
        super().__init__(plan, NoProgress())
        self.answers, self.warm, self.cap_s = answers, warm, cap_s

    async def _closed(self, level: int, load: Load, records: list[RequestRecord],
                      started: float) -> None:
        deadline, cap = started + self.plan.duration_s, started + self.cap_s
        numbers = itertools.count()

        async def stream() -> None:
            sent = 0
            while (now := time.perf_counter()) < cap and (now < deadline or sent < self.answers):
                record = RequestRecord(next(numbers), level, self.warm and not sent, due=now)
                records.append(record)
                await self._send(record)
                sent += 1

        await asyncio.gather(*(stream() for _ in range(int(load.value))))


async def drive(port: int, concurrency: int, seconds: float) -> LevelResult:
    """One run: from 2 s on, each stream's first answer is a warm-up and each stream has at
    least one answer after it (within 4 times the duration)."""
    client = Client(Target.parse(f"http://127.0.0.1:{port}{PATH}"), {})
    plan = Plan(client, DIALECTS["openai"], BUILTIN, [Load("concurrency", concurrency)],
                requests=10**9, duration_s=seconds, model="default")
    warm = seconds >= WARMUP_MIN_S
    try:
        (level,) = await StreamsRun(plan, 2 if warm else 1, warm, 4 * seconds).execute()
    finally:
        client.close()
    return level


def measure(port: int, measured: int, vendor: Process, concurrency: int, seconds: float,
            ours: list[int]) -> Sample:
    """One closed-loop run; `measured` is the process whose CPU counts (the service, or the
    fake vendor for the direct run); `ours`, every process of the benchmark, so the CPU the
    rest of the machine took meanwhile is known."""
    stats = vendor_get(vendor, "/bench/stats")
    cpu_before, vendor_before = cpu_s(measured), cpu_s(vendor.pid)
    ours_before = sum(cpu_s(pid) for pid in ours) + time.process_time()
    busy_before = machine_busy_s()
    started = time.perf_counter()
    level = run(drive(port, concurrency, seconds))
    wall = time.perf_counter() - started
    others = (machine_busy_s() - busy_before
              - (sum(cpu_s(pid) for pid in ours) + time.process_time() - ours_before))
    cpu, vendor_cpu = cpu_s(measured) - cpu_before, cpu_s(vendor.pid) - vendor_before
    after = vendor_get(vendor, "/bench/stats")
    summary = level.summary
    if summary.failed or summary.ttft is None:
        raise RuntimeError(f"requests failed on port {port}: {summary.errors}")
    every = [record for record in level.records if record.ok]
    return Sample(
        ttfts=[ttft for record in every if not record.warmup
               and (ttft := record.ttft) is not None],
        answers_per_s=summary.requests_per_s, wall_s=wall, cpu_s=cpu,
        vendor_tokens=after["tokens"] - stats["tokens"], answers=len(every),
        client_frames=sum(record.text_frames for record in every),
        client_tokens=sum(record.tokens for record in every),
        vendor_share=vendor_cpu / wall, loadgen_share=level.client.cpu_share,
        loadgen_busy=level.client.busy,
        loadgen_lag_s=lag.p99 if (lag := level.client.loop_lag) is not None else 0.0,
        others_share=max(others, 0.0) / wall)


def request_bytes(port: int, index: int) -> bytes:
    body = orjson.dumps({"model": "default", "stream": True,
                         "messages": [{"role": "user", "content": f"quiet stream {index}"}]})
    return (b"POST %b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (PATH.encode(), port, len(body), body))


async def hold_open(service: Process, count: int) -> tuple[int, int]:
    """RSS before and while `count` streams wait for their first token (the vendor quiet)."""
    before = memory_kib(service.pid, "VmRSS")
    loop = asyncio.get_running_loop()
    transports = []
    try:
        for index in range(count):
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1",
                                                        service.port)
            transport.write(request_bytes(service.port, index))
            transports.append(transport)
        await asyncio.sleep(1.0 + count / 250)  # every request reaches its vendor and waits
        return before, memory_kib(service.pid, "VmRSS")
    finally:
        for transport in transports:
            transport.close()


# --- the report --------------------------------------------------------------------------

@dataclass
class Cell:
    rounds: list[dict[str, Sample]] = field(default_factory=list)

    def samples(self, target: str) -> list[Sample]:
        return [round_[target] for round_ in self.rounds]

    def direct_ttft(self) -> Distribution | None:
        return Distribution.of([t for s in self.samples("direct") for t in s.ttfts])

    def added_ttft(self, target: str) -> Distribution | None:
        """Each TTFT through hello-ship less the median direct TTFT of the same round."""
        added = []
        for round_ in self.rounds:
            direct = statistics.median(round_["direct"].ttfts)
            added += [ttft - direct for ttft in round_[target].ttfts]
        return Distribution.of(added)

    def ttft(self, target: str) -> Distribution | None:
        return Distribution.of([t for s in self.samples(target) for t in s.ttfts])

    def median(self, target: str, figure: str) -> float:
        return statistics.median(getattr(s, figure) for s in self.samples(target))


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
        if found:
            model = found[1].strip()
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


class Report:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.services = [t for t in targets if t != "direct"]
        self.rows: list[list[str]] = []

    def row(self, name: str, cells: dict[str, str]) -> None:
        self.rows.append([name, *(cells.get(target, "-") for target in self.targets)])

    def ttft_row(self, name: str, cell: Cell) -> None:
        direct = cell.direct_ttft()
        assert direct is not None
        cells = {"direct": f"{direct.p50 * 1e3:.1f} / {direct.p99 * 1e3:.1f} ms (TTFT)"}
        for target in self.services:
            added, ttft = cell.added_ttft(target), cell.ttft(target)
            assert added is not None and ttft is not None
            cells[target] = (f"{added.p50 * 1e3:+.1f} / {added.p99 * 1e3:+.1f} ms "
                             f"({ratio(ttft.p50, direct.p50)} / "
                             f"{ratio(ttft.p99, direct.p99)})")
        self.row(name, cells)

    def rate_row(self, name: str, cell: Cell) -> None:
        direct = cell.median("direct", "answers_per_s")
        cells = {"direct": f"{direct:,.1f}"}
        for target in self.services:
            value = cell.median(target, "answers_per_s")
            cells[target] = f"{value:,.1f} ({ratio(value, direct)})"
        self.row(name, cells)

    def cpu_row(self, name: str, cell: Cell) -> None:
        cells = {"direct": f"{cell.median('direct', 'cpu_us_per_token'):.1f} (the vendor's own)"}
        for target in self.services:
            cells[target] = f"{cell.median(target, 'cpu_us_per_token'):.1f}"
        self.row(name, cells)

    def print(self) -> None:
        print("| | " + " | ".join(TITLES[target] for target in self.targets) + " |")
        print("|---|" + "---|" * len(self.targets))
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# --- main --------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,50,200",
                        help="streams in flight, paced (default 1,50,200)")
    parser.add_argument("--fast-levels", default="50",
                        help="streams in flight, fast (default 50)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="per run (default 4); from 2 s on, each stream's first answer is "
                             "a warm-up, left out of the figures, and a run goes on until "
                             "each stream has had one more (at most 4 times as long)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of alternating runs per figure (default 3)")
    parser.add_argument("--modes", default="paced,fast", help="paced, fast, or both")
    parser.add_argument("--guard", default="on,off",
                        help="the hello-ship services: on (the defaults), off, or both")
    parser.add_argument("--redo", type=int, default=2,
                        help="times a round is run again when other processes took more than "
                             f"{OTHERS_BUSY:g} cores during it (default 2)")
    parser.add_argument("--open-streams", type=int, default=500,
                        help="streams held open for the memory figure (0: not measured)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds in all: 2 streams, one short round, 20 open "
                             "streams held on the guard-on service already used (the test "
                             "suite's run; its figures mean little)")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.fast_levels, args.seconds, args.repeat = "2", "2", 0.3, 1
        args.open_streams, args.redo = 20, 0
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.fast_levels = [int(x) for x in args.fast_levels.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    args.guard = [g for g in args.guard.split(",") if g]
    if set(args.modes) - {"paced", "fast"} or set(args.guard) - {"on", "off"}:
        parser.error("--modes takes paced and fast, --guard on and off")
    if not args.guard:
        parser.error("--guard needs on, off or both")
    return args


def main() -> None:
    args = parse_args()
    cores = split_cores()
    service_core, load_core = cores if cores is not None else (None, None)
    targets = ["direct", *args.guard]
    plan = [(mode, level) for mode in args.modes
            for level in (args.levels if mode == "paced" else args.fast_levels)]

    print(f"machine: {machine()}")
    print("layout: " + ("hello-ship pinned to core 0; the load generator and the fake vendor "
                        "on core 1" if cores is not None else
                        "not pinned (taskset or a second core missing)"))
    print(f"vendor: fake OpenAI-compatible, {TOKENS} tokens an answer; paced: the first after "
          f"{TTFT_MS:g} ms, then one every {TOKEN_MS:g} ms; fast: all at once")
    print(f"runs: {args.repeat} rounds of {args.seconds:g} s per figure, the targets in turn "
          f"({', '.join(targets)})", flush=True)

    cells: dict[tuple[str, int], Cell] = {}
    processes: list[Process] = []
    peak: dict[str, int] = {}
    held: tuple[int, int] | None = None
    try:
        vendor = start_vendor(load_core)
        processes.append(vendor)
        with tempfile.TemporaryDirectory(prefix="hello-ship-bench-") as directory:
            routes = write_routes(Path(directory), vendor.port)
            services = {guard: start_service(routes, guard, service_core)
                        for guard in args.guard}
            processes.extend(services.values())
            # The memory figure's own service, started with the others and idle until then:
            # fresh, so what the streams add is not hidden in a heap the load has grown.
            fresh = None
            if args.open_streams and "on" in args.guard and not args.quick:
                fresh = start_service(routes, "on", service_core)
                processes.append(fresh)
            for guard, service in services.items():
                wait_for_port(service.port, service.proc, service.log, f"hello-ship ({guard})")
            if fresh is not None:
                wait_for_port(fresh.port, fresh.proc, fresh.log, "hello-ship (on)")
            ports = {"direct": vendor.port, **{g: s.port for g, s in services.items()}}
            pids = {"direct": vendor.pid, **{g: s.pid for g, s in services.items()}}
            ours = [process.pid for process in processes]

            vendor_get(vendor, "/bench/mode/fast")
            for target in targets:  # warm up: imports, connection pools
                measure(ports[target], pids[target], vendor, 4, min(args.seconds, 0.5), ours)

            for mode, level in plan:
                vendor_get(vendor, f"/bench/mode/{mode}")
                cell = cells[(mode, level)] = Cell()
                for index in range(args.repeat):
                    shift = index % len(targets)  # each target first in turn
                    order = targets[shift:] + targets[:shift]
                    for attempt in range(args.redo + 1):
                        round_ = {t: measure(ports[t], pids[t], vendor, level, args.seconds,
                                             ours) for t in order}
                        others = max(sample.others_share for sample in round_.values())
                        if others <= OTHERS_BUSY or attempt == args.redo:
                            break
                        print(f"{mode} {level:>4} streams, round {index + 1}: other processes "
                              f"took {others:.2f} cores, run again", flush=True)
                    cell.rounds.append(round_)
                    print(f"{mode} {level:>4} streams, round {index + 1}: " + "; ".join(
                        f"{t} {s.answers_per_s:,.1f} answers/s, TTFT p50 "
                        f"{statistics.median(s.ttfts) * 1e3:.1f} ms, "
                        f"{s.cpu_us_per_token:.1f} µs CPU/token"
                        for t, s in cell.rounds[-1].items())
                        + f" (other processes: {others:.2f} cores)", flush=True)

            peak = {target: memory_kib(pids[target], "VmHWM") for target in targets}
            if args.quick and args.open_streams and "on" in args.guard:
                fresh = services["on"]  # the quick run's figure: on the service already used
            for service in services.values():
                if service is not fresh:
                    stop(service.proc)
            if fresh is not None:
                vendor_get(vendor, "/bench/mode/quiet")
                held = run(hold_open(fresh, args.open_streams))
                stop(fresh.proc)
    finally:
        for process in processes:
            stop(process.proc)
            if process.log is not None:
                process.log.close()

    report = Report(targets)
    paced = sorted(level for mode, level in plan if mode == "paced")
    fast = sorted(level for mode, level in plan if mode == "fast")
    for level in paced:  # 1 stream: the path's own latency; more: answers/s tell if it kept up
        name = "1 paced stream" if level == 1 else f"{level} paced streams"
        report.ttft_row(f"added TTFT, {name}, p50 / p99", cells[("paced", level)])
        if level > 1:
            report.rate_row(f"answers/s, {name}", cells[("paced", level)])
    for level in fast:
        report.rate_row(f"fast answers/s, {level} streams", cells[("fast", level)])
    for level in paced:
        if level > 1:
            report.cpu_row(f"CPU µs per vendor token, paced, {level} streams",
                           cells[("paced", level)])
    for level in fast:
        report.cpu_row(f"CPU µs per vendor token, fast, {level} streams", cells[("fast", level)])
    report.row("peak RSS", {"direct": f"{mib(peak['direct'])} (the vendor's own)",
                            **{g: mib(peak[g]) for g in args.guard}})
    if held is not None:
        before, during = held
        report.row(f"RSS at {args.open_streams} open streams (guard on)",
                   {"on": f"{mib(during)} (+{(during - before) / args.open_streams:.1f} KiB "
                          "a stream)"})
    print()
    report.print()
    print()
    print("added TTFT: through hello-ship less the direct median of the same round; ratios: "
          "hello-ship's TTFT (answers/s) over the direct run's. CPU per vendor token: the "
          "process's CPU time over a run / token chunks the fake vendor wrote in it (median "
          "of the rounds); in the direct column the fake vendor's own.")

    print("relayed, all rounds (vendor token chunks / answers / text frames the client read):")
    warnings = []
    for (mode, level), cell in cells.items():
        parts = []
        for target in targets:
            samples = cell.samples(target)
            tokens = sum(s.vendor_tokens for s in samples)
            frames = sum(s.client_frames for s in samples)
            parts.append(f"{target} {tokens:,} / {sum(s.answers for s in samples):,} / "
                         f"{frames:,} ({tokens / frames if frames else 0:.2f} tokens a frame)")
        print(f"  {mode} {level:>4} streams: " + "; ".join(parts))
    print("CPU, highest of the rounds: the fake vendor / the load generator (its event loop's "
          "lateness, p99) / the rest of the machine, in cores:")
    for (mode, level), cell in cells.items():
        parts = []
        for target in targets:
            samples = cell.samples(target)
            vendor_share = max(s.vendor_share for s in samples)
            loadgen_share = max(s.loadgen_share for s in samples)
            lag_ms = max(s.loadgen_lag_s for s in samples) * 1e3
            others = max(s.others_share for s in samples)
            parts.append(f"{target} {vendor_share:.0%} / {loadgen_share:.0%} ({lag_ms:.1f} ms)"
                         f" / {others:.2f}")
            if vendor_share > VENDOR_BUSY:
                warnings.append(f"the fake vendor used {vendor_share:.0%} of a core ({mode}, "
                                f"{level} streams, {target}): it may be what is measured")
            if any(s.loadgen_busy for s in samples):
                warnings.append(
                    f"the load generator was busy ({mode}, {level} streams, {target}: "
                    f"{loadgen_share:.0%} of a core, its loop {lag_ms:.1f} ms late at p99): "
                    "its TTFT figures include its own delay" + (
                        "; the direct fast run is the load generator's ceiling, not the "
                        "vendor's" if mode == "fast" and target == "direct" else ""))
            if others > OTHERS_BUSY:
                warnings.append(f"other processes used {others:.2f} cores during a run "
                                f"({mode}, {level} streams, {target}): the machine was not "
                                "quiet, the figures are not the service's alone")
        print(f"  {mode} {level:>4} streams: " + "; ".join(parts))
    for warning in warnings:
        print(f"warning: {warning}")


if __name__ == "__main__":
    main()
