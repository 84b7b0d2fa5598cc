"""A vendor's streamed POST as its SDK builds it: built by the SDK once per client, then sent
again with each request's own body.

The SDK builds every request from scratch: it copies the options with pydantic, parses the
URL three times and merges the headers, about 0.7 ms of CPU a request on the benchmark's
machine (1.4 ms from the call to the response head, against 0.6 ms without it), which is
added to every answer's first token and is more than the adapter spends on 60 tokens of the
answer. What it builds is the same for every request of one client, but the body: the URL,
the key, the user agent and platform headers, the timeouts. So the first request of a client
goes through the SDK's own `post`; what it sent, less its body and the caller's per-request
headers, is kept, and every later request is that one with its own body and headers, sent by
the same SDK's HTTP client (so over its transport, pool, proxy and TLS settings).

Errors stay the SDK's: a response that is not a success is read and raised as the status
error the SDK makes of it, a timeout as its `APITimeoutError`, a broken connection as its
`APIConnectionError`, each from the transport's exception, as the SDK's `request` raises
them. A rotated key makes a new client (`with_options`), which learns its own request.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import orjson

if TYPE_CHECKING:  # each adapter imports its own SDK: a process loads only those it uses
    import anthropic
    import openai

    SDKClient = openai.AsyncOpenAI | anthropic.AsyncAnthropic

# The SDK's `APITimeoutError` and `APIConnectionError`, made from the request that failed.
SDKError = Callable[..., Exception]


class SDKPost:
    """Streamed POSTs of JSON bodies to one path of one SDK client."""

    def __init__(self, client: SDKClient, path: str, *, timeout_error: SDKError,
                 connection_error: SDKError) -> None:
        self.client = client
        self._path = path
        self._timeout_error, self._connection_error = timeout_error, connection_error
        self._sent: _Template | None = None

    async def send(self, body: dict[str, Any],
                   headers: Mapping[str, str] | None) -> httpx2.Response:
        """The vendor's response, its head read and its body not; raises what the SDK
        raises when the status is not a success or the request could not be made."""
        if self._sent is None:
            response: httpx2.Response = await self.client.post(
                self._path, body=body, cast_to=httpx2.Response,
                options={"headers": dict(headers)} if headers else {}, stream=True)
            self._sent = _Template.of(response.request, headers or {})
            return response
        sent = self._sent
        request = httpx2.Request("POST", sent.url, content=orjson.dumps(body),
                                 headers=[*sent.headers, *headers.items()] if headers
                                 else sent.headers, extensions=dict(sent.extensions))
        # The SDK's HTTP client: the one it was made with, shared by its `with_options` copies.
        http: httpx2.AsyncClient = self.client._client
        try:
            response = await http.send(request, stream=True)
        except httpx2.TimeoutException as exc:
            raise self._timeout_error(request=request) from exc
        except (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream) as exc:
            raise self._connection_error(request=request) from exc
        if not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self.client._make_status_error_from_response(response) from None
        return response


@dataclass(frozen=True, slots=True)
class _Template:
    """What the SDK sent for one client, for the next requests: all but the body, its
    length, the caller's per-request headers and any idempotency key (one per request)."""

    url: httpx2.URL
    headers: list[tuple[str, str]]
    extensions: dict[str, Any]

    @classmethod
    def of(cls, request: httpx2.Request, per_request: Mapping[str, str]) -> _Template:
        skip = {name.lower() for name in per_request} | {"content-length"}
        encoding = request.headers.encoding  # names keep the case the SDK gave them
        headers = [(name.decode(encoding), value.decode(encoding))
                   for name, value in request.headers.raw
                   if name.lower().decode(encoding) not in skip
                   and b"idempotency" not in name.lower()]
        return cls(request.url, headers, dict(request.extensions))
