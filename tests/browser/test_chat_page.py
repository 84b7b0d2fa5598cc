"""The chat page in a real Chromium against the whole service on 127.0.0.1.

Playwright drives Debian's `chromium` (installed by `make test`), never a browser of its own.
One browser serves the module; each test has a fresh context (its own storage), a page whose
dialogs are recorded, and a check at the end that the page never broke its own CSP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from config.settings import Settings
from tests.browser.harness import cuttable_proxy, recording_server
from tests.programs import required_tool
from tests.servers import FAST_DEMO, ThreadServer, app_server
from tests.tenant_keys import ACME_KEY, config_env, tenants_toml
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

REPORTS = Path(__file__).resolve().parents[2] / "reports"
# The demo model, paced so an answer takes about a second: long enough to be seen streaming.
# An answer whose reader is gone keeps running for the reader to come back, as by default: a
# cut has something to resume, and only the stop button's DELETE stops an answer at once.
PACED_DEMO = {**FAST_DEMO, "DEMO_TTFT_MS": "100", "DEMO_TOKEN_DELAY_MS": "15",
              "DEMO_ANSWER_TOKENS": "40", "RESUME_GRACE_S": "10"}
LAST_ANSWER = "[...document.querySelectorAll('.turn.assistant')].at(-1)"


@contextmanager
def service(**env: str) -> Iterator[ThreadServer]:
    with app_server(Settings.from_env({**PACED_DEMO, **env})) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = required_tool("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


class Watched:
    """What a page did that it never should: dialogs opened, CSP refusals logged."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.refusals: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.refusals.append(message.text)


@pytest.fixture
def watched(browser: Browser) -> Iterator[tuple[Page, Watched]]:
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    context.set_default_timeout(5000)
    page = context.new_page()
    watched = Watched(page)
    yield page, watched
    context.close()
    assert watched.dialogs == []
    assert watched.refusals == []


@pytest.fixture
def page(watched: tuple[Page, Watched]) -> Page:
    return watched[0]


def ask(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def last_answer(page: Page) -> Locator:
    return page.locator(".turn.assistant").last


def wait_until_answered(page: Page, timeout_ms: float = 8000) -> None:
    """Until the last answer has ended, however it ended."""
    expect(last_answer(page)).to_have_attribute("aria-busy", "false", timeout=timeout_ms)


def partial_while_streaming(page: Page, at_least: int = 1) -> str:
    """The answer's text once it holds `at_least` characters while the stream is still open."""
    handle = page.wait_for_function(f"""() => {{
        const answer = {LAST_ANSWER};
        const text = answer && answer.querySelector('.text').textContent;
        return answer && answer.getAttribute('aria-busy') === 'true'
            && text.length >= {at_least} && text;
    }}""")
    return cast(str, handle.json_value())


def completion_requests(upstream: Upstream) -> int:
    return sum(1 for request in upstream.requests if request.path == "/v1/chat/completions")


def paced(sentences: int, delay_s: float) -> Script:
    """An answer of `sentences` sentences, one a token, `delay_s` apart."""
    return Script(tokens=tuple(f"Sentence {n} of the answer. " for n in range(1, sentences + 1)),
                  token_delay_s=delay_s)


# -- streaming --------------------------------------------------------------------------------

def test_the_answer_streams_in_as_text_and_the_next_turn_sends_the_conversation(
        page: Page) -> None:
    posted: list[Any] = []
    page.on("request", lambda request: posted.append(request.post_data_json)
            if request.method == "POST" and request.url.endswith("/chat/streams") else None)
    with service() as live:
        page.goto(live.url)
        expect(page).to_have_title("hello-ship chat")
        ask(page, "What does the gateway do?")
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        partial = partial_while_streaming(page)
        wait_until_answered(page)
        answer = last_answer(page).locator(".text").text_content() or ""
        expected = httpx.post(f"{live.url}/chat",
                              json={"message": "What does the gateway do?"}).json()["answer"]
        assert answer == expected
        assert partial != answer and answer.startswith(partial)  # it arrived in parts
        expect(last_answer(page).locator(".route")).to_have_text("demo/hello-1")
        expect(page.get_by_role("button", name="Send")).to_be_visible()
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()

        page.get_by_label("Message").fill("And how does it fail?")
        page.get_by_label("Message").press("Enter")
        wait_until_answered(page)
        assert posted == [
            {"messages": [{"role": "user", "content": "What does the gateway do?"}]},
            {"messages": [{"role": "user", "content": "What does the gateway do?"},
                          {"role": "assistant", "content": answer},
                          {"role": "user", "content": "And how does it fail?"}]},
        ]
        expect(page.locator(".turn")).to_have_count(4)
        REPORTS.mkdir(exist_ok=True)
        page.screenshot(path=REPORTS / "chat-page.png", full_page=True)
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=REPORTS / "chat-page-dark.png", full_page=True)


def test_a_cut_connection_resumes_the_same_answer_exactly_once(
        page: Page, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = paced(12, 0.12)
    whole = "".join(upstream.script.tokens)
    with service(**OPENAI.env(upstream)) as live, cuttable_proxy(live.url) as proxy:
        page.goto(proxy.url)
        ask(page, "Tell me a long story.")
        partial_while_streaming(page, at_least=len("Sentence 1 of the answer. ") * 2)
        accepted = proxy.accepted
        assert proxy.cut() > 0
        status = last_answer(page).get_by_role("status")
        expect(status).to_have_text("Connection lost. Reconnecting…")
        wait_until_answered(page)
        expect(status).to_be_hidden()
        assert last_answer(page).locator(".text").text_content() == whole
        assert proxy.accepted > accepted  # EventSource came back through the proxy
    assert completion_requests(upstream) == 1
    assert upstream.wait_for_outcomes(1) == ["completed"]


# -- model output is text ---------------------------------------------------------------------

def test_markup_in_an_answer_is_shown_as_inert_text(watched: tuple[Page, Watched]) -> None:
    page, seen = watched
    with recording_server() as elsewhere, service() as live:
        hostile = ("<script>alert(1)</script> <img src=x onerror=alert(2)> "
                   f"![x](http://127.0.0.1:{elsewhere.port}/a.png)")
        page.goto(live.url)
        ask(page, f"/echo {hostile}")
        wait_until_answered(page)
        answer = last_answer(page).locator(".text")
        expect(answer).to_have_text(hostile)
        assert answer.locator("*").count() == 0  # text alone: no element was made
        expect(page.locator(".turn.user .text")).to_have_text(f"/echo {hostile}")
        page.wait_for_timeout(200)  # what a load or handler would have needed to show
        assert elsewhere.paths == []
    assert seen.dialogs == []
    assert seen.refusals == []  # nothing even tried to run or load
    assert page.locator(".conversation img, .conversation script").count() == 0


# -- failures ---------------------------------------------------------------------------------

def test_an_error_frame_keeps_the_partial_answer_under_a_banner(
        page: Page, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(tokens=("The first sentence. ", "The second sentence. ",
                                     "A third, never sent"), drop_after=2)
    with service(**OPENAI.env(upstream), MAX_ATTEMPTS="1") as live:
        page.goto(live.url)
        ask(page, "Go on.")
        wait_until_answered(page)
        answer = last_answer(page)
        text = answer.locator(".text").text_content() or ""
        assert text and "The first sentence. The second sentence. ".startswith(text)
        banner = answer.get_by_role("alert")
        expect(banner).to_contain_text("Request ID req_")
        expect(banner.locator(".banner-message")).not_to_be_empty()
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert completion_requests(upstream) == 1


def test_a_failure_before_any_words_offers_to_ask_again(page: Page,
                                                       upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.queue.append(Script(status=503))
    with service(**OPENAI.env(upstream), MAX_ATTEMPTS="1") as live:
        page.goto(live.url)
        ask(page, "Hello?")
        wait_until_answered(page)
        failed = last_answer(page)
        expect(failed.locator(".text")).to_be_hidden()  # no empty bubble above the banner
        failed.get_by_role("button", name="Try again").click()
        wait_until_answered(page)
        expect(last_answer(page).locator(".text")).to_have_text("Hello, world!")
    asked = [request.json["messages"] for request in upstream.requests
             if request.path == "/v1/chat/completions"]
    assert len(asked) == 2
    assert asked[0] == asked[1]  # the failed exchange is not part of the conversation


def test_a_refused_start_says_why_with_its_request_id(page: Page, tmp_path: Path) -> None:
    with service(**config_env(tmp_path, tenants_toml())) as live:
        page.goto(live.url)
        ask(page, "Hello?")
        banner = last_answer(page).get_by_role("alert")
        expect(banner).to_contain_text("Set a tenant key for this tab above.")
        expect(banner).to_contain_text("Request ID req_")
        expect(page.get_by_label("API key for this tab")).to_be_visible()
        expect(last_answer(page)).to_have_attribute("aria-busy", "false")


# -- the stop button --------------------------------------------------------------------------

def test_stop_ends_the_answer_and_the_vendor_call(page: Page,
                                                  upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = paced(40, 0.15)
    deletes: list[int] = []
    page.on("response", lambda response: deletes.append(response.status)
            if response.request.method == "DELETE" else None)
    with service(**OPENAI.env(upstream)) as live:
        page.goto(live.url)
        ask(page, "Tell me everything.")
        partial_while_streaming(page)
        page.get_by_role("button", name="Stop").click()
        assert upstream.wait_for_outcomes(1, timeout=3) == ["client_closed"]
        answer = last_answer(page)
        expect(answer.get_by_role("status")).to_have_text("Stopped.")
        expect(answer).to_have_attribute("aria-busy", "false")
        stopped_at = answer.locator(".text").text_content() or ""
        assert stopped_at and stopped_at != "".join(upstream.script.tokens)
        page.wait_for_timeout(300)
        assert answer.locator(".text").text_content() == stopped_at
        expect(page.get_by_role("button", name="Send")).to_be_visible()
        assert len(deletes) == 1 and 200 <= deletes[0] < 300


# -- the tenant key ---------------------------------------------------------------------------

def test_the_tenant_key_is_sent_as_bearer_and_kept_for_this_tab_only(
        page: Page, tmp_path: Path) -> None:
    sent: list[str | None] = []
    page.on("request", lambda request: sent.append(request.headers.get("authorization"))
            if request.url.endswith("/chat/streams") else None)
    with service(**config_env(tmp_path, tenants_toml())) as live:
        page.goto(live.url)
        page.get_by_text("Tenant key").click()
        page.get_by_label("API key for this tab").fill(ACME_KEY)
        ask(page, "Hello with a key.")
        wait_until_answered(page)
        expect(last_answer(page).get_by_role("alert")).to_have_count(0)
        assert sent == [f"Bearer {ACME_KEY}"]
        assert page.evaluate("sessionStorage.getItem('hello-ship.tenant-key')") == ACME_KEY
        assert page.evaluate("localStorage.length") == 0
        page.reload()
        expect(page.get_by_label("API key for this tab")).to_have_value(ACME_KEY)
        other_tab = page.context.new_page()
        other_tab.goto(live.url)
        expect(other_tab.get_by_label("API key for this tab")).to_have_value("")
        assert page.context.cookies() == []


def test_the_page_loads_under_its_policy_ready_to_type(page: Page) -> None:
    with service() as live:
        response = page.goto(live.url)
        assert response is not None
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        expect(page.get_by_label("Message")).to_be_focused()
        expect(page.get_by_role("button", name="Send")).to_be_disabled()
        page.get_by_label("Message").fill("Hi")
        expect(page.get_by_role("button", name="Send")).to_be_enabled()
        expect(page.get_by_role("log", name="Conversation")).to_contain_text("Ask anything")
