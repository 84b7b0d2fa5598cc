"""The load tester's pieces below the network: reading SSE, the two dialects, the figures'
definitions and the client's view of its own load."""

from __future__ import annotations

import statistics

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.loadtest import endpoint
from tools.loadtest_meter import ClientLoad
from tools.loadtest_record import RequestRecord
from tools.loadtest_sse import DIALECTS, EventSplitter, MalformedFrame
from tools.loadtest_stats import Distribution, summarize

names = st.sampled_from([None, "token", "done", "error", "message"])
datas = st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                       blacklist_characters="\r\n"), max_size=12),
                 min_size=1, max_size=3)
line_ends = st.sampled_from(["\n", "\r\n", "\r"])


@given(st.lists(st.tuples(names, datas, st.booleans()), max_size=8), line_ends,
       st.lists(st.integers(1, 40), max_size=30))
def test_events_split_across_reads_come_out_whole(
        events: list[tuple[str | None, list[str], bool]], end: str, cuts: list[int]) -> None:
    wire = ""
    expected = []
    for name, data, comment in events:
        if comment:
            wire += f": heartbeat{end}{end}"
        wire += (f"event: {name}{end}" if name else "") + "".join(
            f"data: {line}{end}" for line in data) + end
        expected.append(((name or "message").encode(), "\n".join(data).encode()))
    body = wire.encode()
    splitter = EventSplitter()
    got = []
    position = 0
    for cut in cuts:
        got += splitter.feed(body[position:position + cut])
        position += cut
    got += splitter.feed(body[position:])
    assert got == expected


def test_a_data_field_keeps_all_but_one_leading_space() -> None:
    assert EventSplitter().feed(b"data:x\n\ndata:  y\n\nid: 3\n\n") == [
        (b"message", b"x"), (b"message", b" y")]


def test_hello_ships_frames_are_read_for_text_count_end_and_error() -> None:
    dialect = DIALECTS["hello-ship"]
    assert dialect.read(b"token", b'{"type":"token","token":"Hi"}').text == 2
    assert dialect.read(b"token", b'{"type":"token","token":""}').text == 0
    assert dialect.read(b"meta", b'{"type":"meta","request_id":"r"}').text == 0
    done = dialect.read(b"done", b'{"usage":{"input_tokens":3,"output_tokens":7}}')
    assert (done.ended, done.output_tokens, done.error) == (True, 7, None)
    assert dialect.read(b"error", b'{"code":"stream_interrupted"}').error == "stream_interrupted"
    with pytest.raises(MalformedFrame):
        dialect.read(b"token", b'{"type":"token"}')
    body = orjson.loads(dialect.body(*_prompt(), max_tokens=5, model=None))
    assert body == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_openai_chunks_are_read_for_text_count_end_and_error() -> None:
    dialect = DIALECTS["openai"]
    assert dialect.read(b"message", b'{"choices":[{"delta":{"role":"assistant"}}]}').text == 0
    assert dialect.read(b"message", b'{"choices":[{"delta":{"content":"Hey"}}]}').text == 3
    assert dialect.read(b"message",
                        b'{"choices":[{"delta":{"reasoning_content":"hmm"}}]}').text == 3
    usage = dialect.read(b"message", b'{"choices":[],"usage":{"completion_tokens":12}}')
    assert (usage.output_tokens, usage.ended) == (12, False)
    assert dialect.read(b"message", b"[DONE]").ended
    failed = dialect.read(b"message", b'{"error":{"type":"server_error","code":null}}')
    assert (failed.ended, failed.error) == (True, "server_error")
    with pytest.raises(MalformedFrame):
        dialect.read(b"message", b"[1, 2]")
    with pytest.raises(MalformedFrame):
        dialect.read(b"message", b'{"choices": 5}')
    assert dialect.read(b"message", b'{"error": null, "choices": []}').error is None
    assert dialect.read(b"message", b'{"error": {}}').error == "error"
    assert dialect.read(b"message", b'{"usage": {"completion_tokens": true}}').output_tokens is None
    body = orjson.loads(dialect.body(*_prompt(), max_tokens=None, model="m"))
    assert body["stream"] is True and body["model"] == "m" and "max_tokens" not in body


def _prompt() -> tuple[object]:
    from tools.loadtest_prompts import Prompt

    return (Prompt([{"role": "user", "content": "hi"}]),)


@pytest.mark.parametrize(("url", "api", "expected", "dialect"), [
    ("http://h:8080", None, "http://h:8080/chat/stream", "hello-ship"),
    ("http://h:8080/", "openai", "http://h:8080/v1/chat/completions", "openai"),
    ("https://api.example.com/v1", "openai", "https://api.example.com/v1/chat/completions",
     "openai"),
    ("http://h/v1/chat/completions", None, "http://h/v1/chat/completions", "openai"),
    ("http://h/gateway/chat/stream", None, "http://h/gateway/chat/stream", "hello-ship"),
    ("https://h:443/x", None, "https://h:443/x/chat/stream", "hello-ship"),
    ("http://h/v1?api-version=2", "openai", "http://h/v1/chat/completions?api-version=2",
     "openai"),
    ("https://faß.de/", None, "https://xn--fa-hia.de/chat/stream", "hello-ship"),
])
def test_the_endpoint_comes_from_the_url_or_the_api(url: str, api: str | None, expected: str,
                                                    dialect: str) -> None:
    target, chosen = endpoint(url, api)
    assert (target.url, chosen) == (expected, dialect)


def record(index: int, sent: float, first: float | None, ended: float | None,
           gaps: list[float], tokens: int | None = None, error: str | None = None,
           warmup: bool = False) -> RequestRecord:
    r = RequestRecord(index, 0, warmup, due=sent, sent=sent, first_text=first, ended=ended,
                      text_frames=len(gaps) + (first is not None), output_tokens=tokens,
                      gaps=gaps, error=error)
    r.closed = ended if ended is not None else sent + 0.05
    return r


def test_the_figures_follow_the_definitions_of_vllm_and_llmperf() -> None:
    records = [
        record(0, 0.0, 0.2, 1.0, [0.1] * 8, tokens=9),  # TPOT (1.0 - 0.2) / 8 = 0.1
        record(1, 0.5, 0.6, 1.5, [0.3] * 3),  # no count given: 4 frames; TPOT 0.9 / 3 = 0.3
        record(2, 1.0, None, None, [], error="http 429 rate_limited"),
        record(3, 2.0, 2.4, 3.0, [0.2] * 3, tokens=4),  # TPOT 0.6 / 3 = 0.2
        record(4, -1.0, -0.5, 0.0, [0.1], tokens=2, warmup=True),
    ]
    s = summarize(records, slo_ttft_s=0.3)
    assert (s.requests, s.ok, s.failed, s.unfinished) == (4, 3, 1, 0)
    assert s.window_s == pytest.approx(3.0)  # first sent at 0.0, last closed at 3.0
    assert s.requests_per_s == pytest.approx(3 / 3)  # those that succeeded
    assert s.goodput_per_s == pytest.approx(2 / 3)  # TTFT 0.2 and 0.1 within 0.3; 0.4 not
    assert s.ttft is not None and sorted([s.ttft.p50, s.ttft.max]) == pytest.approx([0.2, 0.4])
    assert s.tpot is not None and s.tpot.mean == pytest.approx(0.2)
    assert s.output_tokens == 9 + 4 + 4 and s.token_source == "mixed"
    assert s.tokens_per_frame == pytest.approx(17 / (9 + 4 + 4))
    assert s.tokens_per_s == pytest.approx(17 / 3)
    assert s.itl is not None and s.itl.count == 8 + 3 + 3
    assert s.itl.p50 == pytest.approx(statistics.median([0.1] * 8 + [0.3] * 3 + [0.2] * 3))
    assert s.e2e is not None and s.e2e.max == pytest.approx(1.0)
    assert s.request_tokens_per_s is not None
    assert s.request_tokens_per_s.max == pytest.approx(9 / 1.0)
    assert s.errors == {"http 429 rate_limited": 1}


def test_requests_cut_by_an_interrupt_are_counted_apart_from_every_figure() -> None:
    running = record(0, 0.0, 0.1, None, [])
    running.closed = None
    s = summarize([running, record(1, 0.0, 0.2, 0.5, [0.1])])
    assert (s.requests, s.ok, s.unfinished) == (1, 1, 1)
    assert s.ttft is not None and s.ttft.count == 1


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    d = Distribution.of([float(v) for v in range(1, 101)])
    assert d is not None
    assert (d.p50, d.p90, d.p99, d.max) == pytest.approx((50.5, 90.1, 99.01, 100.0))
    single = Distribution.of([7.0])
    assert single is not None and single.p99 == 7.0
    assert Distribution.of([]) is None


@pytest.mark.parametrize(("cpu", "lag_ms", "busy"), [
    (0.3, 1.0, False), (0.85, 1.0, True), (0.3, 25.0, True)])
def test_the_client_warns_when_it_is_the_bottleneck(cpu: float, lag_ms: float,
                                                    busy: bool) -> None:
    load = ClientLoad(cpu, Distribution.of([lag_ms / 1000] * 10))
    assert load.busy is busy
    warning = load.warning()
    assert (warning is not None) is busy
    if warning:
        assert f"CPU {cpu:.0%} of a core" in warning and "--processes" not in warning


def test_a_level_too_short_to_judge_is_not_called_busy() -> None:
    assert not ClientLoad(0.95, Distribution.of([0.001] * 3), wall_s=0.2).busy
    assert ClientLoad(0.95, Distribution.of([0.001] * 3), wall_s=2.0).busy


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tools import loadtest_progress
    from tools.loadtest_run import Load

    clock = [100.0]
    monkeypatch.setattr(loadtest_progress.time, "monotonic", lambda: clock[0])
    for terminal in (True, False):
        out = io.StringIO()
        progress = loadtest_progress.LiveProgress(out, terminal)
        progress.level_started(Load("concurrency", 4), 10)
        for index in range(5):
            progress.request_closed(record(index, 0.0, 0.25, 1.0, []))
        progress.tick()
        clock[0] += 6
        progress.tick()
        lines = out.getvalue()
        if terminal:
            assert "\r[############............] 5/10 done, 0 failed, TTFT p50 250 ms" in lines
            assert lines.count("\n") == 1  # the bar is redrawn in place
        else:
            assert "\r" not in lines
            # One line when the level starts, then one every 5 seconds, not one per tick.
            assert lines.splitlines()[1:] == ["loadtest: 5/10 done, 0 failed, TTFT p50 250 ms, "
                                              "6 s"]
        clock[0] = 100.0
