"""Streams a browser can open, and answers a reader can leave and come back to, over real HTTP:
stream tokens, resuming from any frame, the grace, stopping, two replicas on one redis-server."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.factory import create_app
from config.settings import Settings
from tenancy.stream_tokens import StreamTokens
from tests.fakes import ScriptedProvider, words
from tests.logcapture import captured_logs
from tests.redis_server import RedisServer, redis_proxy
from tests.servers import FAST_DEMO, FAST_PACING, ThreadServer, app_server, thread_server
from tests.sse import SSEItem, parse_sse
from tests.tenant_keys import ACME_KEY, GLOBEX_KEY, bearer, config_env, tenants_toml

TOKEN_KEY = "k" * 40
SENTENCES = "One. Two. Three. Four. Five. Six. Seven. Eight."


def keyed(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({**FAST_DEMO, **config_env(tmp_path, tenants_toml()),
                              "STREAM_TOKEN_KEY": TOKEN_KEY, **env})


def frames(text: str) -> list[SSEItem]:
    return [item for item in parse_sse(text) if item.is_event]


def tokens(items: list[SSEItem]) -> str:
    return "".join(item.data["token"] for item in items if item.event == "token")


def read_some(client: httpx.Client, url: str, count: int = 1) -> list[SSEItem]:
    """Read until `count` token frames came, then drop the connection."""
    received = ""
    with client.stream("GET", url) as response:
        for line in response.iter_lines():
            received += line + "\n"
            if received.count("event: token") == count:
                break
    return frames(received + "\n")


def start(client: httpx.Client, live: ThreadServer, key: str | None = ACME_KEY,
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(live.url + "/chat/streams", json=body or {"message": "hi"},
                           headers=bearer(key) if key else None)
    assert response.status_code == 201, response.text
    started: dict[str, Any] = response.json()
    return started


def test_a_stream_url_serves_the_frames_of_chat_stream(tmp_path: Path) -> None:
    with app_server(keyed(tmp_path)) as live, httpx.Client(timeout=10) as client:
        started = start(client, live)
        read = client.get(live.url + started["stream_url"])  # no key: the token stands in
    items = frames(read.text)
    assert read.status_code == 200 and read.headers["content-type"].startswith(
        "text/event-stream")
    assert started["expires_in"] == 60 and started["stream_id"].startswith("str_")
    assert items[0].event == "meta" and items[0].data["stream_id"] == started["stream_id"]
    assert items[-1].event == "done" and tokens(items).startswith("Hello from the hello-ship")
    assert [int(item.id or -1) for item in items] == list(range(len(items)))


def test_resuming_from_every_frame_gives_exactly_the_rest(tmp_path: Path) -> None:
    with app_server(keyed(tmp_path, RESUME_GRACE_S="30")) as live, \
            httpx.Client(timeout=10) as client:
        started = start(client, live)
        url = live.url + started["stream_url"]
        whole = frames(client.get(url).text)
        rests = {n: frames(client.get(url, headers={"Last-Event-ID": str(n)}).text)
                 for n in range(len(whole) - 1)}
        by_query = frames(client.get(url + "&last_event_id=2").text)
        past_the_end = client.get(url, headers={"Last-Event-ID": str(len(whole) - 1)})
    for n, rest in rests.items():
        assert [(i.id, i.event, i.data) for i in rest] == [
            (i.id, i.event, i.data) for i in whole[n + 1:]], n
    assert [i.id for i in by_query] == [i.id for i in whole[3:]]
    assert past_the_end.status_code == 204  # EventSource stops there


def test_a_dropped_reader_resumes_the_same_answer_with_one_vendor_call(tmp_path: Path) -> None:
    provider = ScriptedProvider(words(SENTENCES, 0.05))
    settings = keyed(tmp_path, RESUME_GRACE_S="5")
    with thread_server(create_app(settings, provider)) as live, \
            httpx.Client(timeout=10) as client:
        received = ""
        with client.stream("POST", live.url + "/chat/stream", json={"message": "hi"},
                           headers=bearer(ACME_KEY)) as response:
            for line in response.iter_lines():
                received += line + "\n"
                if received.count("event: token") == 2:
                    break  # the connection drops here
        first = frames(received + "\n")
        stream_id = first[0].data["stream_id"]
        rest = frames(client.get(
            f"{live.url}/chat/streams/{stream_id}?last_event_id={first[-1].id}",
            headers=bearer(ACME_KEY)).text)
    assert provider.started == 1
    assert tokens(first) + tokens(rest) == SENTENCES
    assert [i.event for i in rest][-1] == "done" and [i.id for i in first + rest] == [
        str(n) for n in range(len(first) + len(rest))]


def test_an_answer_nobody_comes_back_to_is_cut_after_the_grace(tmp_path: Path) -> None:
    provider = ScriptedProvider(words(SENTENCES, 0.3))
    settings = keyed(tmp_path, RESUME_GRACE_S="0.5")
    with captured_logs() as logs, thread_server(create_app(settings, provider)) as live, \
            httpx.Client(timeout=10) as client:
        started = start(client, live)
        read_some(client, live.url + started["stream_url"])  # and never back
        end = wait_for(logs, "request_end")
        late = client.get(live.url + started["stream_url"], headers={"Last-Event-ID": "0"})
    assert provider.closed_early == 1  # the vendor call was cancelled, not run to its end
    assert end["status"] == "client_disconnected" and end["tokens_emitted"] < 8
    (gone,) = logs.records("client_disconnected")
    assert gone["reason"] == "closed"
    (expired,) = frames(late.text)
    assert expired.event == "error" and expired.data["code"] == "resume_expired"


def wait_for(logs: Any, event: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not logs.records(event):
        assert time.monotonic() < deadline, f"no {event} in time"
        time.sleep(0.02)
    record: dict[str, Any] = logs.records(event)[0]
    return record


def test_stopping_an_answer_ends_it_and_its_vendor_call(tmp_path: Path) -> None:
    provider = ScriptedProvider(words(SENTENCES, 0.2))
    with thread_server(create_app(keyed(tmp_path, RESUME_GRACE_S="30"), provider)) as live, \
            httpx.Client(timeout=10) as client:
        started = start(client, live)
        stream_id = started["stream_id"]
        token = started["stream_url"].split("token=")[1]
        reading: list[str] = []
        reader = threading.Thread(target=lambda: reading.append(
            client.get(live.url + started["stream_url"]).text))
        reader.start()  # reads live while the answer is stopped under it
        time.sleep(0.7)  # a few of its 1.6 s of words have gone out
        other = client.delete(f"{live.url}/chat/streams/{stream_id}", headers=bearer(GLOBEX_KEY))
        stopped = client.delete(f"{live.url}/chat/streams/{stream_id}?token={token}")
        reader.join(timeout=5)
        read = frames(reading[0])
        resumed = frames(client.get(live.url + started["stream_url"],
                                    headers={"Last-Event-ID": "0"}).text)
        after_end = client.get(live.url + started["stream_url"],
                               headers={"Last-Event-ID": read[-1].id or ""})
        unknown = client.delete(f"{live.url}/chat/streams/str_{'0' * 24}", headers=bearer(ACME_KEY))
    assert other.status_code == 403 and stopped.status_code == 204
    assert tokens(read) and read[-1].event == "error" and read[-1].data["code"] == "stopped"
    assert [i.id for i in resumed] == [i.id for i in read[1:]]  # the stop is in the log too
    assert after_end.status_code == 204
    assert provider.closed_early == 1
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "stream_not_found"


def test_bad_tokens_are_refused_and_never_logged(tmp_path: Path) -> None:
    tokens_ = StreamTokens(TOKEN_KEY.encode(), 60)
    with captured_logs() as logs, app_server(keyed(tmp_path, RESUME_GRACE_S="5")) as live, \
            httpx.Client(timeout=10) as client:
        mine, theirs = start(client, live), start(client, live, GLOBEX_KEY)
        mine_id, theirs_id = mine["stream_id"], theirs["stream_id"]
        token = mine["stream_url"].split("token=")[1]
        url = f"{live.url}/chat/streams/{mine_id}?token="
        expired = StreamTokens(TOKEN_KEY.encode(), -5).issue(mine_id, "acme")
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        answers = {
            "expired": client.get(url + expired),
            "expired, resuming": client.get(url + expired, headers={"Last-Event-ID": "0"}),
            "another stream's": client.get(url + theirs["stream_url"].split("token=")[1]),
            "another tenant's": client.get(url + tokens_.issue(mine_id, "globex")),
            "tampered": client.get(url + tampered),
            "another key": client.get(f"{live.url}/chat/streams/{theirs_id}",
                                      headers=bearer(ACME_KEY)),
            "no credential": client.get(f"{live.url}/chat/streams/{mine_id}"),
        }
    statuses = {name: (r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else "")
                for name, r in answers.items()}
    assert statuses == {
        "expired": (401, "stream_token_expired"),
        "expired, resuming": (200, ""),  # EventSource reconnects with the URL it was given
        "another stream's": (403, "stream_forbidden"),
        "another tenant's": (403, "stream_forbidden"),
        "tampered": (401, "invalid_stream_token"),
        "another key": (403, "stream_forbidden"),
        "no credential": (401, "unauthorized"),
    }
    for response in answers.values():
        if response.status_code >= 400:
            assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    for secret in (token, expired, tampered):
        assert not [line for line in logs.lines if secret[-20:] in line]


@contextmanager
def two_replicas(settings: Settings, provider: ScriptedProvider) -> Iterator[list[ThreadServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(thread_server(create_app(settings, provider)))
               for _ in range(2)]


def redis_keys(server: RedisServer, prefix: str) -> list[bytes]:
    client = redis.Redis(port=server.port)
    try:
        return list(client.scan_iter(f"{prefix}:replay:*"))
    finally:
        client.close()


def test_a_resume_on_another_replica_through_redis(
        tmp_path: Path, shared_redis: RedisServer) -> None:
    prefix = uuid.uuid4().hex
    provider = ScriptedProvider(words(SENTENCES, 0.05))
    # No STREAM_TOKEN_KEY: the replicas share the one the first made in Redis.
    settings = Settings.from_env({**FAST_PACING, **config_env(tmp_path, tenants_toml()),
                                  "REDIS_URL": shared_redis.url, "REDIS_KEY_PREFIX": prefix,
                                  "RESUME_GRACE_S": "5"})
    with two_replicas(settings, provider) as (one, two), httpx.Client(timeout=10) as client:
        started = start(client, one)
        first = read_some(client, one.url + started["stream_url"], 3)
        rest = frames(client.get(two.url + started["stream_url"],
                                 headers={"Last-Event-ID": str(first[-1].id)}).text)
    assert provider.started == 1
    assert tokens(first) + tokens(rest) == SENTENCES and rest[-1].event == "done"


def test_an_abandoned_answer_leaves_no_task_buffer_or_redis_key(
        tmp_path: Path, shared_redis: RedisServer) -> None:
    prefix = uuid.uuid4().hex
    provider = ScriptedProvider(words(SENTENCES, 0.3))
    settings = Settings.from_env({**FAST_PACING, **config_env(tmp_path, tenants_toml()),
                                  "REDIS_URL": shared_redis.url, "REDIS_KEY_PREFIX": prefix,
                                  "RESUME_GRACE_S": "0.5"})
    app = create_app(settings, provider)
    with thread_server(app) as live, httpx.Client(timeout=10) as client:
        started = start(client, live)
        assert redis_keys(shared_redis, prefix)  # mirrored while it runs
        read_some(client, live.url + started["stream_url"])
        deadline = time.monotonic() + 10
        while provider.closed_early == 0:
            assert time.monotonic() < deadline, "the answer was never cut"
            time.sleep(0.05)
        time.sleep(0.3)
        answers = live.run_in_loop(lambda: app_state(app).answers)
        runs = len(answers._runs)
        local = answers.store.local._logs
        tasks = live.run_in_loop(lambda: count_tasks("_run"))
        late = frames(client.get(live.url + started["stream_url"],
                                 headers={"Last-Event-ID": "0"}).text)
    assert runs == 0 and tasks == 0
    assert started["stream_id"] not in local
    assert redis_keys(shared_redis, prefix) == []
    assert late[-1].data["code"] == "resume_expired"


def app_state(app: Any) -> Any:
    inner = app
    while not hasattr(inner, "state"):
        inner = inner.app
    return inner.state


def count_tasks(name: str) -> int:
    import asyncio

    return sum(1 for task in asyncio.all_tasks()
               if name in repr(task.get_coro()))


def test_cors_lets_only_the_configured_origins_in(tmp_path: Path) -> None:
    settings = keyed(tmp_path, CORS_ALLOW_ORIGINS="https://chat.example.com")
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        allowed = client.options(live.url + "/chat/streams", headers={
            "Origin": "https://chat.example.com", **preflight})
        other = client.options(live.url + "/chat/streams", headers={
            "Origin": "https://evil.example", **preflight})
        started = client.post(live.url + "/chat/streams", json={"message": "hi"},
                              headers={"Origin": "https://chat.example.com", **bearer(ACME_KEY)})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert started.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "x-request-id" in started.headers["access-control-expose-headers"].lower()


def test_without_cors_origins_no_browser_origin_is_allowed(tmp_path: Path) -> None:
    with app_server(keyed(tmp_path)) as live, httpx.Client(timeout=10) as client:
        answer = client.post(live.url + "/chat/streams", json={"message": "hi"},
                             headers={"Origin": "https://chat.example.com", **bearer(ACME_KEY)})
    assert answer.status_code == 201 and "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("value", ["abc", "1.5", "-2"])
def test_a_malformed_last_event_id_is_a_400(tmp_path: Path, value: str) -> None:
    with app_server(keyed(tmp_path)) as live, httpx.Client(timeout=10) as client:
        started = start(client, live)
        answer = client.get(live.url + started["stream_url"], headers={"Last-Event-ID": value})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request"


def test_a_resumed_stream_gets_heartbeats_while_the_model_is_quiet(tmp_path: Path) -> None:
    provider = ScriptedProvider(words("One. Two. Three.", 0.6))
    settings = keyed(tmp_path, RESUME_GRACE_S="5", HEARTBEAT_S="0.1")
    with thread_server(create_app(settings, provider)) as live, \
            httpx.Client(timeout=10) as client:
        started = start(client, live)
        first = read_some(client, live.url + started["stream_url"])
        rest = client.get(live.url + started["stream_url"],
                          headers={"Last-Event-ID": str(first[-1].id)}).text
    assert ": heartbeat" in rest
    assert tokens(first) + tokens(frames(rest)) == "One. Two. Three."


def test_a_slow_redis_does_not_slow_readers_where_the_answer_runs(
        tmp_path: Path, shared_redis: RedisServer) -> None:
    """Redis answering each append 0.4 s late: the local reader's frames come as the model
    makes them, and a reader on another replica still gets the whole answer."""
    from streaming.replay_redis import _APPEND

    provider = ScriptedProvider(words(SENTENCES, 0.05))
    with redis_proxy(shared_redis) as proxy:
        settings = Settings.from_env({
            **FAST_PACING, **config_env(tmp_path, tenants_toml()), "REDIS_URL": proxy.url,
            "REDIS_KEY_PREFIX": uuid.uuid4().hex, "REDIS_TIMEOUT_S": "2",
            "RESUME_GRACE_S": "5", "STREAM_TOKEN_KEY": TOKEN_KEY})
        with two_replicas(settings, provider) as (one, two), \
                httpx.Client(timeout=10) as client:
            proxy.hold_script_replies(_APPEND, 0.4)
            asked = time.monotonic()
            started = start(client, one)
            arrivals: list[float] = []
            with client.stream("GET", one.url + started["stream_url"]) as response:
                for line in response.iter_lines():
                    if line.startswith("event: token"):
                        arrivals.append(time.monotonic())
            elsewhere = frames(client.get(two.url + started["stream_url"],
                                          headers={"Last-Event-ID": "0"}).text)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 8 and max(gaps) < 0.3  # the model's pace, not Redis's
    assert arrivals[0] - asked < 0.3
    assert tokens(elsewhere) == SENTENCES and elsewhere[-1].event == "done"
