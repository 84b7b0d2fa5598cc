"""Waits that run side by side, their outcomes read one at a time as they end.

A hedged request waits for two routes' first events at once; each wait runs in a task of its
own in the caller's task group. Only those waits run here: the route that wins is read on by
the caller in its own task, outside the group, so a route chain never yields from inside one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

K = TypeVar("K")
V = TypeVar("V")


class Race(Generic[K, V]):
    """Waits started in `group`, each under a key; `next` gives their outcomes in the order
    they end: the value, or the exception the wait raised (the reader decides what a failure
    means). A wait that is cancelled has no outcome."""

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self._scopes: dict[K, anyio.CancelScope] = {}
        self._ended: dict[K, V | Exception] = {}
        self._changed = anyio.Event()

    def start(self, key: K, wait: Callable[[], Awaitable[V]]) -> None:
        scope = anyio.CancelScope()
        self._scopes[key] = scope
        self._group.start_soon(self._run, key, wait, scope)

    async def next(self, timeout_s: float | None = None) -> tuple[K, V | Exception] | None:
        """The next outcome not read yet, or None when `timeout_s` passes first."""
        if not self._ended:
            self._changed = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._changed.wait()
        if not self._ended:
            return None
        key = next(iter(self._ended))
        del self._scopes[key]
        return key, self._ended.pop(key)

    def outcome(self, key: K) -> V | Exception | None:
        """What a wait that ended unread came to; None if it had not ended."""
        return self._ended.get(key)

    def cancel(self) -> None:
        """Stop every wait still running; the group's exit then waits for them to unwind."""
        for key, scope in self._scopes.items():
            if key not in self._ended:
                scope.cancel()

    async def _run(self, key: K, wait: Callable[[], Awaitable[V]],
                   scope: anyio.CancelScope) -> None:
        with scope:
            try:
                outcome: V | Exception = await wait()
            except Exception as error:  # the reader's to judge, in the reader's task
                outcome = error
            self._ended[key] = outcome
            self._changed.set()
