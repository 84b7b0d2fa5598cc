"""API keys as values that cannot leak by accident: no repr, no str, no equality by content."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar


class Secret:
    """A provider key. Only `reveal()` gives the text, so a stray log or repr shows `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where a route's key came from, named for operators (`/ready`, errors): never the key."""

    description: str
    key: Secret | None
    remedy: str  # what to do when it is missing: "set OPENAI_API_KEY"
    file: str | None = None  # a key file is read again when it changes (config.reload)

    @property
    def present(self) -> bool:
        return self.key is not None


class KeyedClient(Protocol):
    """A vendor SDK's client: `with_options` copies it, sharing its connection pool."""

    def with_options(self, *, api_key: str) -> Self: ...


Client = TypeVar("Client", bound=KeyedClient)


def client_for_key(client: Client | None, key: Secret,
                   new_client: Callable[[Secret], Client]) -> Client:
    """The client for the requests that start from now on, with a rotated key: a copy of
    `client`, so those in flight finish on it with the key they began with, or a new client
    where there was none (the route started without a key)."""
    return new_client(key) if client is None else client.with_options(api_key=key.reveal())
