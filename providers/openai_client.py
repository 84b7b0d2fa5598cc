"""The one way this project builds an `AsyncOpenAI`: no SDK retries, the route's timeouts."""

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
    )
