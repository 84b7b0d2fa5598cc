"""The chat page: a few static files shipped inside the package, served under a strict CSP.

The page is one HTML file, one script and one stylesheet from this origin, with no inline
script or style, so the policy can forbid everything else: model output the script writes as
text could not run or load anything even if it were ever parsed as HTML. Only the names in
`FILES` are served, read from the package once, at first use; anything else is 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from app.errors import ApiError

FILES = {
    "index.html": "text/html; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (cheaply, by ETag), so a deploy is seen at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@cache
def static_file(name: str) -> StaticFile:
    body = resources.files("app").joinpath("static", name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return StaticFile(body, FILES[name], etag)


def _serve(request: Request, name: str) -> Response:
    file = static_file(name)
    headers = {**SECURITY_HEADERS, "ETag": file.etag}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


async def index(request: Request) -> Response:
    return _serve(request, "index.html")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:
        raise ApiError(404, "not_found", "No such file.", headers=SECURITY_HEADERS)
    return _serve(request, name)
