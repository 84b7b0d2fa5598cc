"""The chat page's files: served from the package by name only, each under the strict policy.

The page itself, in a real browser against the whole service: tests/browser/test_chat_page.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from app import page
from app.errors import ApiError, handle_api_error
from app.factory import create_app
from config.settings import Settings
from tests.servers import FAST_DEMO

STATIC = Path(page.__file__).parent / "static"
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
          "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/", page.index, methods=["GET"]),
                            Route("/static/{name}", page.static, methods=["GET"])],
                    exception_handlers={ApiError: handle_api_error})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


def assert_locked_down(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(("path", "name", "media_type"), [
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/static/chat.js", "chat.js", "text/javascript; charset=utf-8"),
    ("/static/chat.css", "chat.css", "text/css; charset=utf-8"),
    ("/static/favicon.svg", "favicon.svg", "image/svg+xml"),
])
async def test_each_file_is_served_with_its_type_under_the_policy(
        client: httpx.AsyncClient, path: str, name: str, media_type: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (STATIC / name).read_bytes()
    assert_locked_down(response)


@pytest.mark.parametrize("name", ["page.py", "__init__.py", "index.htm", "CHAT.JS",
                                  "chat.js.map", "%2E%2E"])
async def test_any_other_name_is_404_in_the_envelope_under_the_policy(
        client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/static/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert_locked_down(response)


async def test_a_cached_copy_is_revalidated_by_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/static/chat.js")
    again = await client.get("/static/chat.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert_locked_down(again)
    stale = await client.get("/static/chat.js", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200


async def test_the_service_serves_the_page_at_its_root() -> None:
    app = create_app(Settings.from_env(FAST_DEMO))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        found = await client.get("/")
        missing = await client.get("/static/missing.js")
    assert found.status_code == 200
    assert found.content == (STATIC / "index.html").read_bytes()
    assert found.headers["x-request-id"].startswith("req_")
    assert_locked_down(found)
    assert missing.status_code == 404
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    assert_locked_down(missing)


def test_every_file_in_the_folder_is_served_and_every_served_file_exists() -> None:
    assert {path.name for path in STATIC.iterdir()} == set(page.FILES)


def test_the_page_keeps_to_its_own_policy() -> None:
    """No inline script or style, nothing from another origin: the policy would refuse them,
    so they would only be broken, not a hole."""
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/chat.js" defer>']
    assert "<style" not in html
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    for text in (html, (STATIC / "chat.js").read_text(), (STATIC / "chat.css").read_text()):
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text)
    script = (STATIC / "chat.js").read_text()
    # Model output only ever becomes Text nodes.
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(",
                         script)
