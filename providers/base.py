"""The provider protocol: one streaming method, and a close for pooled clients."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from providers.types import CompletionRequest, ProviderEvent, RouteHealth


@runtime_checkable
class Provider(Protocol):
    """One route (`provider/model`) with its client, created once and reused.

    `stream` yields `TextDelta`s, then `Usage` and `Finish` (in either order), and raises
    `ProviderError` on failure. Closing the iterator early (the caller was cancelled) must
    release the upstream response, so the vendor stops decoding and billing. A stream cancelled
    while it awaits the vendor unwinds inside the cancelled scope, where every await raises at
    once, so cleanup that awaits shields itself with a bound:
    `with anyio.move_on_after(5, shield=True): await response.aclose()`.
    """

    @property
    def route(self) -> str: ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]: ...

    async def probe(self) -> RouteHealth:
        """A cheap check that the route could answer: credentials present, vendor reachable.

        Never a completion; callers cache the result and bound it with a timeout.
        """
        ...

    async def aclose(self) -> None: ...
