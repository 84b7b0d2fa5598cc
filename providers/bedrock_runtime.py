"""One route's `bedrock-runtime` client, shared by the Bedrock adapters (Converse for chat,
InvokeModel for Titan embeddings): made on first use with the AWS credential chain, the
route's region, endpoint and timeouts, and no SDK retries.

On first use, not at start-up: a bad `AWS_PROFILE` is then one route's problem, which `/ready`
reports, instead of a service that does not start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError

from providers.errors import ProviderMisconfigured
from providers.spec import RouteSpec

VENDOR = "bedrock"
MAX_POOL_CONNECTIONS = 100


class BedrockRuntime:
    def __init__(self, spec: RouteSpec,
                 on_created: Callable[[Any], None] | None = None) -> None:
        """`on_created` sees the client once, when it is made (event hooks, the API model)."""
        self._spec = spec
        self._on_created = on_created
        self._session: Any = None
        self._client: Any = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._lock = anyio.Lock()

    def session(self) -> Any:
        if self._session is None:
            try:
                self._session = aioboto3.Session(region_name=self._spec.region)
            except BotoCoreError as exc:  # e.g. ProfileNotFound
                raise ProviderMisconfigured(
                    f"{VENDOR}: AWS configuration error ({type(exc).__name__})") from None
        return self._session

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                config = AioConfig(
                    # Retries belong to the caller, which knows about fallback and budgets.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self._spec.connect_timeout_s,
                    read_timeout=self._spec.timeout_s,
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                )
                client = self.session().client(
                    "bedrock-runtime", endpoint_url=self._spec.base_url, config=config)
                self._client = await self._exit_stack.enter_async_context(client)
                if self._on_created is not None:
                    self._on_created(self._client)
            return self._client

    async def aclose(self) -> None:
        await self._exit_stack.aclose()
        self._client = None
