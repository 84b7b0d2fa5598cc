"""Typed, validated reads of configuration values, and the one error a bad value raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T", int, float)


class SettingsError(ValueError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"invalid configuration: {variable}: {problem}")
        self.variable = variable


class EnvReader:
    """Typed reads of environment variables; blank counts as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def number(self, name: str, default: T, kind: Callable[[str], T],
               low: T, high: T) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise SettingsError(name, f"must be {noun}, got {raw!r}") from None
        if not low <= value <= high:  # also rejects nan
            raise SettingsError(name, f"must be between {low} and {high}, got {raw!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value
