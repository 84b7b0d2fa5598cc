"""The one way this project builds an `AsyncOpenAI`: no SDK retries, the route's timeouts, and
the SDK's aiohttp transport (`DefaultAioHttpClient`).

The SDK still builds and sends each request, raises the status errors and maps the transport's
errors to its own; only the HTTP/1.1 underneath is aiohttp's. With a token per read, as a
paced model streams, httpx2's stack was most of an adapter's CPU: h11's parsing in Python, a
cancel scope per read, and a pool that probes every idle connection's socket each time a
request starts or ends; aiohttp's parser is C and its pool is not scanned. httpx2's client
still resolves proxies from the environment, TLS settings and redirects, and the route's
connect and read timeouts apply as before.
"""

from __future__ import annotations

import openai
from openai import AsyncOpenAI

from providers.credentials import Secret


def openai_client(key: Secret, base_url: str | None, *, timeout_s: float,
                  connect_timeout_s: float) -> AsyncOpenAI:
    """A client to create once and reuse: its connection pool serves every request.

    With `base_url` None the SDK reads `OPENAI_BASE_URL`, else uses api.openai.com.
    """
    return AsyncOpenAI(
        api_key=key.reveal(),
        base_url=base_url,
        # Retries belong to the caller, which knows about fallback and budgets.
        max_retries=0,
        timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
        http_client=openai.DefaultAioHttpClient(),
    )
