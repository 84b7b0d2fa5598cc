"""Providers scripted step by step, for pipeline and edge tests where the vendor does not matter.

They sit below the HTTP line: the service under test still runs for real around them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import anyio

from providers.types import (
    CompletionRequest,
    Finish,
    ProviderEvent,
    RouteHealth,
    TextDelta,
    Usage,
)


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Fail:
    error: BaseException


Step = str | Sleep | Fail | Usage | Finish


@dataclass
class ScriptedProvider:
    """Plays `script` for every request and records how each stream ended."""

    script: Sequence[Step]
    name: str = "fake/scripted"
    queue: list[Sequence[Step]] = field(default_factory=list)  # for the next calls, first
    started: int = 0
    finished: int = 0
    closed_early: int = 0
    requests: list[CompletionRequest] = field(default_factory=list)
    # Cleanup that awaits, like releasing an HTTP response; `released` counts completed ones.
    release_s: float = 0.0
    released: int = 0
    release_error: Exception | None = None  # a cleanup that fails
    health: RouteHealth = field(default_factory=lambda: RouteHealth("present", True))

    @property
    def route(self) -> str:
        return self.name

    @property
    def open_streams(self) -> int:
        return self.started - self.finished - self.closed_early

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        self.started += 1
        self.requests.append(request)
        completed = False
        script = self.queue.pop(0) if self.queue else self.script
        try:
            for step in script:
                if isinstance(step, str):
                    yield TextDelta(step)
                elif isinstance(step, Sleep):
                    await anyio.sleep(step.seconds)
                elif isinstance(step, Fail):
                    raise step.error
                else:
                    yield step
            completed = True
        finally:
            if completed:
                self.finished += 1
            else:
                self.closed_early += 1
            if self.release_s:
                await anyio.sleep(self.release_s)
            if self.release_error is not None:
                raise self.release_error
            self.released += 1

    async def probe(self) -> RouteHealth:
        return self.health

    async def aclose(self) -> None:
        return None


def words(text: str, delay: float = 0.0) -> list[Step]:
    """The text as word tokens, each preceded by a `delay` sleep."""
    steps: list[Step] = []
    for index, word in enumerate(text.split(" ")):
        if delay:
            steps.append(Sleep(delay))
        steps.append(word if index == 0 else " " + word)
    return steps
