"""Answer cache benchmark: time to first token of a cached answer at 10,000 entries a tenant,
beside a miss answered by a model, and what storing answers costs the service.

The issue's targets: in `first` mode a hit's TTFT is at most 5 ms p99 on one core with
10,000 entries per tenant; in `fallback` mode (the default) the happy path pays nothing but
storing the answer after `done`.

`hello-ship serve` runs pinned to core 0 with `taskset` (this client on core 1) on the demo
model at zero pacing (40-token answers), with roomy limits, the answer cache in the process's
memory and no embedding model, so near-duplicates are matched lexically (MinHash of word
shingles). The questions are FAQ-like, made from word lists, so many share words and the
near-duplicate index has real work: its buckets fill with questions that share a phrase.
They are drawn so that no two are near-duplicates of each other (each is checked against
the ones before with the service's own signatures and threshold), so every one is a miss
when it is first asked and every one is stored.

1. `CACHE_MODE=first`, `CACHE_MAX_ENTRIES=10000`: N distinct questions (default 10,000) go
   through `POST /chat` on a few keep-alive connections; then /metrics is read until
   `hello_ship_cache_writes_total{outcome="stored"}` shows all N stored.
2. On one keep-alive connection, one request at a time, `POST /chat/stream`, the time from
   sending the request to reading its first `event: token` frame, for: exact hits (a stored
   question re-spaced and re-cased), lexical near-duplicate hits (a stored question with one
   word added) and misses (a new question, answered by the demo model: the service's direct
   path, which includes the cache's lookup that missed). The three kinds take turns, so the
   machine's noise hits all of them. Every answer is checked: a hit must end with `cached`,
   its match kind and the answer written for the stored question; a miss with the model's
   own answer. Anything else stops the run. While it runs, each miss is stored and the
   oldest entry leaves: the tenant holds 10,000 entries throughout.
3. The same fill again into two more services, `CACHE_MODE=off` and `CACHE_MODE=fallback`,
   in alternating chunks: the service's CPU time per answer in each (storing included: the
   fallback chunk ends when /metrics shows its answers stored), and the resident memory
   after the fill.

Run: `make bench-cache` (or `.venv/bin/python -m bench.cache_hits --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bench.gateway import (
    ROOMY_LIMITS,
    UNSET,
    Process,
    cpu_s,
    free_port,
    hello_ship,
    machine,
    memory_kib,
    mib,
    pinned,
    split_cores,
    stop,
    wait_for_port,
)
from cache.lexical import LexicalIndex, signature, similarity
from cache.question import normalize
from providers.demo import demo_answer
from providers.types import Message
from tools.loadtest_stats import Distribution

ANSWER_TOKENS = 40
LEXICAL_SIMILARITY = 0.8  # the service's default CACHE_LEXICAL_SIMILARITY, set explicitly
TARGET_P99_MS = 5.0
STORED_WAIT_S = 120.0
# Settings of the caller's shell that would change the service under test.
SCRUB = (*UNSET, "REDIS_URL", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR", "OTEL_ENABLED",
         "SYSTEM_PROMPT", "PROMPT_VERSION", "RPM_PER_USER", "MAX_OUTPUT_TOKENS")
SCRUB_PREFIXES = ("CACHE_", "DEMO_", "GUARD_")
TOKEN_EVENT = b"\nevent: token\n"
KINDS = ("exact", "lexical", "miss")
TITLES = {"exact": "exact hit (a stored question re-spaced and re-cased)",
          "lexical": "lexical near-duplicate hit (one word added)",
          "miss": "miss: the demo model at zero pacing (direct path)"}


# --- questions ---------------------------------------------------------------------------

VERBS = ("reset", "change", "cancel", "update", "export", "delete", "download", "renew",
         "transfer", "recover", "verify", "share", "pause", "restore", "rename", "upgrade",
         "downgrade", "link", "unlink", "print", "archive", "merge", "unlock", "replace")
OBJECTS = ("password", "invoice", "account", "subscription", "billing address", "api key",
           "order", "refund request", "delivery address", "team seats", "data export",
           "profile photo", "two-factor code", "payment card", "shipping label",
           "support ticket", "trial plan", "usage report", "webhook", "notification emails",
           "workspace", "username", "receipt", "gift card", "return label", "calendar",
           "phone number", "company name", "tax details", "saved reports")
PLACES = ("in the mobile app", "on the website", "from the dashboard", "through the api",
          "in the admin console", "on my phone", "from the billing page",
          "in the settings menu", "on a shared computer", "from my laptop",
          "without the desktop app", "from the help center", "in the browser extension",
          "on the tablet app", "from the command line", "in the team space")
WHEN = ("after the trial ends", "while travelling abroad", "before the next billing date",
        "without losing my data", "during an outage", "after moving house",
        "once the order has shipped", "when my card expires", "if I forgot my email",
        "after switching plans", "before the end of the month", "when nobody is an admin")
PROBLEMS = ("keep failing", "look wrong", "not show up", "stop working", "get rejected",
            "take so long", "disappear", "show an error")
OWNERS = ("my", "the", "our", "a")
TEMPLATES: tuple[tuple[str | tuple[str, ...], ...], ...] = (
    ("how do I", VERBS, OWNERS, OBJECTS, PLACES),
    ("can I", VERBS, OWNERS, OBJECTS, WHEN),
    ("why does", OWNERS, OBJECTS, PROBLEMS, WHEN),
    ("is it possible to", VERBS, OWNERS, OBJECTS, PLACES, WHEN),
    ("what happens to", OWNERS, OBJECTS, "if I", VERBS, "it", WHEN),
    ("who can", VERBS, OWNERS, OBJECTS, PLACES),
)
# Added at the start or the end of a stored question for a near-duplicate.
FILLERS = ("please", "so", "hi", "again", "today", "now", "quickly", "exactly")


def drafts(rng: random.Random) -> Iterator[str]:
    """FAQ-like questions, each once."""
    seen: set[str] = set()
    while True:
        words = [part if isinstance(part, str) else rng.choice(part)
                 for part in rng.choice(TEMPLATES)]
        text = " ".join(words) + "?"
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            yield text


@dataclass
class Questions:
    """Questions of which no two are near-duplicates by the service's own measure, and the
    index of them that the service will hold (the same signatures: they are fixed hashes)."""

    texts: list[str]
    signatures: list[tuple[int, ...]]
    index: LexicalIndex

    @classmethod
    def draw(cls, count: int, rng: random.Random) -> Questions:
        texts: list[str] = []
        signatures: list[tuple[int, ...]] = []
        index = LexicalIndex()
        for text in drafts(rng):
            sig = signature(normalize(text))
            if index.best(sig, LEXICAL_SIMILARITY, 1):
                continue  # a near-duplicate of one drawn before: it would be a hit
            index.add(str(len(texts)), sig)
            texts.append(text)
            signatures.append(sig)
            if len(texts) == count:
                return cls(texts, signatures, index)
        raise AssertionError("unreachable")

    def near_duplicate(self, number: int, rng: random.Random) -> str | None:
        """Question `number` with one word added, found as that question and no other; None
        when no filler word does it."""
        text = self.texts[number]
        for filler in rng.sample(FILLERS, len(FILLERS)):
            for variant in (f"{filler.capitalize()} {text[0].lower()}{text[1:]}",
                            f"{text[:-1]} {filler}?"):
                sig = signature(normalize(variant))
                found = self.index.best(sig, LEXICAL_SIMILARITY, 2)
                if (found and found[0][0] == str(number)
                        and similarity(sig, self.signatures[number]) >= LEXICAL_SIMILARITY
                        and (len(found) == 1 or found[1][1] < found[0][1])):
                    return variant
        return None


def respaced(text: str, rng: random.Random) -> str:
    """The same question to the cache: other spacing and case."""
    words = [word.upper() if rng.random() < 0.3 else word.lower() for word in text.split()]
    spaces = [rng.choice((" ", "  ", "\t", " \n ")) for _ in words[1:]]
    joined = words[0] + "".join(space + word for space, word in zip(spaces, words[1:],
                                                                   strict=True))
    variant = f"  {joined} "
    assert normalize(variant) == normalize(text) and variant != text
    return variant


# --- HTTP on a kept-alive socket ---------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    first_token_s: float | None  # from sending the request to reading `event: token`


class Connection:
    """One keep-alive HTTP/1.1 connection, read with plain `recv` so that the time the first
    token frame arrives is taken as soon as its bytes are read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.started, self.tail = 0.0, b""
        self.first_token_s: float | None = None

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Reply:
        body = b"" if payload is None else orjson.dumps(payload)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.first_token_s, self.tail = None, b""
        self.started = time.perf_counter()
        self.sock.sendall(head.encode() + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        status_line, *lines = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        self.buffer = self.buffer[end + 4:]
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buffer) < length:
                self._receive()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return Reply(status, headers, body, None)
        if headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"{method} {path}: neither a length nor chunks: {headers}")
        chunks: list[bytes] = []
        while True:
            while (line_end := self.buffer.find(b"\r\n")) < 0:
                self._receive()
            size = int(self.buffer[:line_end].split(b";")[0], 16)
            end = line_end + 2 + size + 2  # the chunk's data and its CRLF
            while len(self.buffer) < end:
                self._receive()
            chunks.append(self.buffer[line_end + 2:end - 2])
            self.buffer = self.buffer[end:]
            if size == 0:
                return Reply(status, headers, b"".join(chunks), self.first_token_s)

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the service on port {self.port} closed the connection")
        self.buffer += data
        if self.first_token_s is None:  # looked for in every read as it comes
            if TOKEN_EVENT in self.tail + data:
                self.first_token_s = time.perf_counter() - self.started
            self.tail = data[-len(TOKEN_EVENT):]


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of a whole `/chat/stream` body: (event name, data)."""
    found = []
    for block in body.decode().split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = orjson.loads(line[len("data: "):])
        if name is not None and data is not None:
            found.append((name, data))
    return found


# --- the service -------------------------------------------------------------------------

def service_env(mode: str, max_entries: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in SCRUB and not name.startswith(SCRUB_PREFIXES)}
    env.update(ROOMY_LIMITS)
    env.update({"DEMO_TTFT_MS": "0", "DEMO_TOKEN_DELAY_MS": "0",
                "DEMO_ANSWER_TOKENS": str(ANSWER_TOKENS), "CACHE_MODE": mode,
                "CACHE_MAX_ENTRIES": str(max_entries),
                "CACHE_LEXICAL_SIMILARITY": str(LEXICAL_SIMILARITY)})
    return env


def start_service(mode: str, max_entries: int, core: int | None) -> Process:
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the process, in main)
    proc = subprocess.Popen(pinned([*hello_ship(), "serve", "--port", str(port)], core),
                            env=service_env(mode, max_entries), stdout=subprocess.DEVNULL,
                            stderr=log)
    process = Process(proc, port, log)
    wait_for_port(port, proc, log, f"hello-ship (CACHE_MODE={mode})")
    return process


_WRITES = re.compile(r'^hello_ship_cache_writes_total\{outcome="(\w+)"\} ([\d.e+]+)$',
                     re.MULTILINE)


def cache_writes(port: int) -> dict[str, int]:
    """`hello_ship_cache_writes_total` by outcome, from /metrics."""
    connection = Connection(port)
    try:
        reply = connection.request("GET", "/metrics")
    finally:
        connection.close()
    if reply.status != 200:
        raise RuntimeError(f"/metrics answered {reply.status}")
    return {outcome: int(float(value))
            for outcome, value in _WRITES.findall(reply.body.decode())}


def wait_stored(port: int, expected: int) -> None:
    """Until /metrics shows `expected` answers stored; a dropped or failed write stops it."""
    deadline = time.monotonic() + STORED_WAIT_S
    while True:
        writes = cache_writes(port)
        if writes.get("dropped") or writes.get("failed"):
            raise RuntimeError(f"writes were lost: {writes}")
        if writes.get("stored", 0) >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{expected} answers not stored within {STORED_WAIT_S:g} s: "
                               f"{writes}")
        time.sleep(0.02)


def fill(port: int, texts: Sequence[str], connections: int) -> None:
    """Every question through `POST /chat`, on `connections` keep-alive connections; each
    must be answered by the model (a cached answer would not be stored)."""
    failures: list[str] = []

    def ask(share: Sequence[str]) -> None:
        connection = Connection(port)
        try:
            for text in share:
                reply = connection.request("POST", "/chat", {"message": text})
                answer = orjson.loads(reply.body) if reply.status == 200 else None
                if answer is None or answer.get("cached") or answer["model_route"] == "cache":
                    failures.append(f"{text!r}: {reply.status} {reply.body[:300]!r}")
                    return
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(texts[n::connections],))
               for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("the fill was not answered by the model: " + "; ".join(failures))


# --- measuring ---------------------------------------------------------------------------

@dataclass
class Probe:
    kind: str  # exact, lexical, miss
    text: str  # what is sent
    answer: str  # what must come back: the stored question's answer, or the model's


def ttft_of(connection: Connection, probe: Probe) -> float:
    """One streamed answer's TTFT, after checking it is what the probe expects."""
    reply = connection.request("POST", "/chat/stream", {"message": probe.text})
    found = events(reply.body) if reply.status == 200 else []
    done = next((data for name, data in found if name == "done"), None)
    text = "".join(data["token"] for name, data in found if name == "token")
    if probe.kind == "miss":
        right = done is not None and not done.get("cached") and done["model_route"] != "cache"
    else:
        right = (done is not None and done.get("cached") is True
                 and done.get("match") == probe.kind and done["model_route"] == "cache"
                 and done.get("similarity", 0) >= (1.0 if probe.kind == "exact"
                                                   else LEXICAL_SIMILARITY))
    if not right or text != probe.answer or reply.first_token_s is None:
        raise RuntimeError(f"expected a {probe.kind} answer to {probe.text!r}; got status "
                           f"{reply.status}, done {done}, answer {text[:120]!r} (expected "
                           f"{probe.answer[:120]!r})")
    return reply.first_token_s


def probes(questions: Questions, fill_count: int, samples: int, warmup: int,
           rng: random.Random) -> dict[str, list[Probe]]:
    """`warmup + samples` of each kind. Hits are of questions stored late in the fill: each
    miss stores one more answer and the oldest entry leaves."""
    def answer(text: str) -> str:
        return demo_answer((Message("user", text),), ANSWER_TOKENS)

    misses = questions.texts[fill_count:fill_count + warmup + samples]
    spared = min(len(misses) + 64, fill_count // 2)  # entries the misses may push out
    pool = list(range(spared, fill_count))
    rng.shuffle(pool)
    exact: list[Probe] = []
    lexical: list[Probe] = []
    for number in pool:
        original = questions.texts[number]
        if len(exact) < warmup + samples:
            exact.append(Probe("exact", respaced(original, rng), answer(original)))
        if len(lexical) < warmup + samples:
            variant = questions.near_duplicate(number, rng)
            if variant is not None:
                lexical.append(Probe("lexical", variant, answer(original)))
    for chosen in (exact, lexical):  # a small fill: questions asked more than once
        if not chosen:
            raise RuntimeError("no stored question to ask again: a larger --entries")
        drawn = list(chosen)
        while len(chosen) < warmup + samples:
            chosen.append(drawn[len(chosen) % len(drawn)])
    return {"exact": exact, "lexical": lexical,
            "miss": [Probe("miss", text, answer(text)) for text in misses]}


def measure(port: int, planned: dict[str, list[Probe]], samples: int, warmup: int,
            gap_s: float) -> dict[str, list[float]]:
    """The kinds in turn, each kind first in turn, on one connection; the first `warmup`
    rounds are left out."""
    ttfts: dict[str, list[float]] = {kind: [] for kind in KINDS}
    connection = Connection(port)
    try:
        for number in range(warmup + samples):
            shift = number % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                ttft = ttft_of(connection, planned[kind][number])
                if number >= warmup:
                    ttfts[kind].append(ttft)
                time.sleep(gap_s)
    finally:
        connection.close()
    return ttfts


@dataclass
class Cost:
    """One service of the storing figure: its CPU over the fill, its memory."""

    mode: str
    answers: int = 0
    cpu_s: float = 0.0
    chunks_ms: list[float] = field(default_factory=list)  # CPU per answer in each chunk
    rss_before_kib: int = 0
    rss_after_kib: int = 0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.answers * 1e3

    @property
    def grown_kib(self) -> int:
        return self.rss_after_kib - self.rss_before_kib


def storing_cost(services: dict[str, Process], texts: Sequence[str], warm: Sequence[str],
                 chunk: int, connections: int) -> dict[str, Cost]:
    """The fill into each service, chunk by chunk, the services in turn (each first in
    turn), after the `warm` questions (not counted). A chunk ends when the answers are
    stored (fallback) or after one read of /metrics (off: the same request, nothing to wait
    for)."""
    costs = {mode: Cost(mode) for mode in services}
    for mode, service in services.items():
        fill(service.port, warm, connections)
        if mode != "off":
            wait_stored(service.port, len(warm))
        costs[mode].rss_before_kib = memory_kib(service.pid, "VmRSS")
    modes = list(services)
    for number, start in enumerate(range(0, len(texts), chunk)):
        part = texts[start:start + chunk]
        shift = number % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            service, cost = services[mode], costs[mode]
            before = cpu_s(service.pid)
            fill(service.port, part, connections)
            if mode == "off":
                cache_writes(service.port)
            else:
                wait_stored(service.port, len(warm) + start + len(part))
            spent = cpu_s(service.pid) - before
            cost.answers += len(part)
            cost.cpu_s += spent
            cost.chunks_ms.append(spent / len(part) * 1e3)
    for mode, service in services.items():
        costs[mode].rss_after_kib = memory_kib(service.pid, "VmRSS")
    return costs


# --- the report --------------------------------------------------------------------------

def figures(values: Sequence[float]) -> dict[str, float]:
    """Milliseconds: percentiles as the load tester computes them, the mean, the maximum."""
    distribution = Distribution.of(values)
    assert distribution is not None
    return {name: float(value) for name, value in distribution.scaled(1e3).items()
            if name != "count"}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000,
                        help="distinct questions stored for the tenant (default 10,000; it "
                             "is also CACHE_MAX_ENTRIES)")
    parser.add_argument("--samples", type=int, default=500,
                        help="measured answers of each kind (default 500)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="answers of each kind asked first and left out (default 10)")
    parser.add_argument("--connections", type=int, default=4,
                        help="keep-alive connections of the fill (default 4)")
    parser.add_argument("--chunk", type=int, default=1000,
                        help="questions per chunk of the off / fallback fill (default 1000)")
    parser.add_argument("--gap-ms", type=float, default=5.0,
                        help="pause after each measured answer, so a miss's write after "
                             "`done` is not in the next answer's TTFT (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="of the questions (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures there")
    parser.add_argument("--quick", action="store_true",
                        help="300 entries, 50 samples of each kind, 3 warm-up rounds (the "
                             "test suite's run; its figures mean little)")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.samples, args.warmup, args.chunk = 300, 50, 3, 100
    if args.entries < 10 or args.samples < 1 or args.connections < 1 or args.chunk < 1:
        parser.error("--entries takes 10 or more; --samples, --connections and --chunk 1 or "
                     "more")
    return args


def main() -> None:
    args = parse_args()
    cores = split_cores()
    core = cores[0] if cores is not None else None
    rng = random.Random(args.seed)
    misses = args.warmup + args.samples

    print(f"machine: {machine()}")
    print("layout: " + ("hello-ship pinned to core 0; this client on core 1"
                        if cores is not None else "not pinned (taskset or a second core "
                                                  "missing)"))
    print(f"service: demo model at zero pacing, {ANSWER_TOKENS}-token answers; answer cache in "
          f"memory, CACHE_MAX_ENTRIES={args.entries}, no embedding model (lexical "
          f"near-duplicates at {LEXICAL_SIMILARITY:g})", flush=True)
    started = time.perf_counter()
    warm_fill = min(200, max(10, args.entries // 10))  # before the storing figure
    questions = Questions.draw(args.entries + misses + warm_fill, rng)
    fill_texts = questions.texts[:args.entries]
    warm_texts = questions.texts[args.entries + misses:]
    planned = probes(questions, args.entries, args.samples, args.warmup, rng)
    print(f"questions: {len(questions.texts):,} drawn, no two near-duplicates, in "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    processes: list[Process] = []
    try:
        first = start_service("first", args.entries, core)
        processes.append(first)
        started = time.perf_counter()
        fill(first.port, fill_texts, args.connections)
        wait_stored(first.port, args.entries)
        fill_s = time.perf_counter() - started
        print(f"fill (CACHE_MODE=first): {args.entries:,} questions through POST /chat on "
              f"{args.connections} connections, all stored, in {fill_s:.1f} s "
              f"({args.entries / fill_s:,.0f} answers/s)", flush=True)
        ttfts = measure(first.port, planned, args.samples, args.warmup, args.gap_ms / 1e3)
        rss_first = memory_kib(first.pid, "VmRSS")
        print(f"measured: {args.samples} answers of each kind on one keep-alive connection, "
              f"the kinds in turn, {args.gap_ms:g} ms apart, after {args.warmup} warm-up "
              "rounds; every answer checked", flush=True)
        stop(first.proc)

        services = {mode: start_service(mode, args.entries, core)
                    for mode in ("off", "fallback")}
        processes.extend(services.values())
        costs = storing_cost(services, fill_texts, warm_texts, args.chunk, args.connections)
        print(f"storing: the same {args.entries:,} questions into CACHE_MODE=off and "
              f"CACHE_MODE=fallback, {args.chunk:,} at a time, the two in turn, after "
              f"{warm_fill} other questions to warm both up", flush=True)
    finally:
        for process in processes:
            stop(process.proc)
            if process.log is not None:
                process.log.close()

    rows = {kind: figures(ttfts[kind]) for kind in KINDS}
    miss = rows["miss"]
    print()
    table([f"TTFT, /chat/stream, {args.entries:,} entries", "p50", "p90", "p99", "max",
           "p50 / p99 vs miss"],
          [[TITLES[kind], *(f"{row[name]:.2f} ms" for name in ("p50", "p90", "p99", "max")),
            f"{row['p50'] / miss['p50']:.2f}x / {row['p99'] / miss['p99']:.2f}x"]
           for kind, row in rows.items()])
    print()
    off, stored = costs["off"], costs["fallback"]
    paired = [(b - a) * 1e3 for a, b in zip(off.chunks_ms, stored.chunks_ms, strict=True)]
    table(["storing answers, the same fill", "CACHE_MODE=off", "CACHE_MODE=fallback"],
          [["service CPU per answer", f"{off.cpu_ms:.2f} ms",
            f"{stored.cpu_ms:.2f} ms ({(stored.cpu_ms - off.cpu_ms) * 1e3:+.0f} µs, "
            f"{stored.cpu_ms / off.cpu_ms:.2f}x)"],
           ["CPU per answer, chunks (min - max)",
            f"{min(off.chunks_ms):.2f} - {max(off.chunks_ms):.2f} ms",
            f"{min(stored.chunks_ms):.2f} - {max(stored.chunks_ms):.2f} ms"],
           ["fallback less off, chunk by chunk: median (min - max)", "-",
            f"{statistics.median(paired):+.0f} µs ({min(paired):+.0f} - {max(paired):+.0f} "
            "µs)"],
           [f"RSS after the fill ({args.entries:,} entries stored)", mib(off.rss_after_kib),
            mib(stored.rss_after_kib)],
           ["RSS growth over the fill", mib(off.grown_kib),
            f"{mib(stored.grown_kib)} ({(stored.grown_kib - off.grown_kib) / args.entries:+.2f} "
            "KiB an entry)"]])
    print()
    hits = {kind: rows[kind]["p99"] for kind in ("exact", "lexical")}
    verdict = "met" if max(hits.values()) <= TARGET_P99_MS else "NOT met"
    print(f"target, a hit's TTFT at most {TARGET_P99_MS:g} ms p99 with {args.entries:,} "
          f"entries: {verdict} (exact {hits['exact']:.3f} ms, lexical {hits['lexical']:.3f} "
          "ms)")
    print(f"TTFT: from sending the request to reading its first `event: token` frame, this "
          f"client on its own core; CPU per answer: the service's CPU time over the fill / "
          f"answers (storing included); the CACHE_MODE=first service's RSS after the fill and "
          f"the measurement: {mib(rss_first)}")

    if args.json:
        report = {
            "machine": machine(), "pinned": cores is not None, "entries": args.entries,
            "samples": args.samples, "warmup": args.warmup, "gap_ms": args.gap_ms,
            "answer_tokens": ANSWER_TOKENS, "fill_s": fill_s,
            "ttft_ms": rows, "target_p99_ms": TARGET_P99_MS,
            "ttft_samples_ms": {kind: [round(ttft * 1e3, 4) for ttft in ttfts[kind]]
                                for kind in KINDS},
            "storing_paired_us": paired,
            "storing": {mode: {**asdict(cost), "cpu_ms_per_answer": cost.cpu_ms}
                        for mode, cost in costs.items()},
            "rss_first_kib": rss_first,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ConnectionError) as exc:
        sys.exit(f"bench.cache_hits: {exc}")
