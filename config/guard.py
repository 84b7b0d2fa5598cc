"""Guardrail settings from the environment and the TOML file.

    [guard]
    detectors = ["email", "phone", "credit_card", "mypackage.pii:PresidioDetector"]
    blocked_patterns = ["(?i)ignore (all )?previous instructions"]
    input_pii = "allow"        # allow | redact | refuse
    input_secrets = "redact"   # allow | redact | refuse
    output_pii = "redact"      # allow | redact | block
    output_secrets = "redact"  # allow | redact | block
    hold_ms = 100
    buffer_chars = 400

    [tenants.acme.guard]       # a tenant's own actions; what it leaves out is the default
    output_pii = "allow"

The environment overrides the file: `GUARD_DETECTORS`, `GUARD_INPUT_PII`,
`GUARD_INPUT_SECRETS`, `GUARD_OUTPUT_PII`, `GUARD_OUTPUT_SECRETS`, `GUARD_HOLD_MS`,
`GUARD_BUFFER_CHARS`; the moderation backend is environment only (`MODERATION`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from config.env import EnvReader, SettingsError
from config.file import CONFIG_VAR
from guard.builtin import BUILTIN
from guard.detectors import Detector, PatternDetector
from guard.plugins import DetectorError, load_detector
from guard.policy import INPUT_ACTIONS, OUTPUT_ACTIONS, GuardPolicy
from guard.scan import MAX_HOLD_BACK
from providers.credentials import Secret

_ACTION_KEYS: dict[str, tuple[str, ...]] = {
    "input_pii": INPUT_ACTIONS, "input_secrets": INPUT_ACTIONS,
    "output_pii": OUTPUT_ACTIONS, "output_secrets": OUTPUT_ACTIONS,
}
_GUARD_KEYS = frozenset({"detectors", "blocked_patterns", "hold_ms", "buffer_chars",
                         *_ACTION_KEYS})
BLOCKED_PATTERN_REACH = 256
MIN_HOLD_MS = 10  # each hold is a timer wake-up of the stream


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    backend: Literal["off", "openai"] = "off"
    model: str = "omni-moderation-latest"
    on_error: Literal["open", "closed"] = "closed"
    timeout_s: float = 2.0
    api_key: Secret | None = field(default=None, repr=False)
    base_url: str | None = None


@dataclass(frozen=True, slots=True)
class GuardSettings:
    detectors: tuple[Detector, ...] = tuple(BUILTIN.values())
    policy: GuardPolicy = GuardPolicy()
    tenant_policies: Mapping[str, GuardPolicy] = field(default_factory=dict)
    hold_s: float = 0.1
    buffer_chars: int = 400
    moderation: ModerationSettings = ModerationSettings()

    def policy_for(self, tenant: str) -> GuardPolicy:
        return self.tenant_policies.get(tenant, self.policy)


def read_guard(env: EnvReader, config: Mapping[str, Any]) -> GuardSettings:
    table = _table(config.get("guard", {}), "guard")
    unknown = sorted(set(table) - _GUARD_KEYS)
    if unknown:
        raise SettingsError(f"{CONFIG_VAR}: guard.{unknown[0]}",
                            f"unknown key; known: {', '.join(sorted(_GUARD_KEYS))}")
    default = _policy(env, table, GuardPolicy(), "guard")
    tenants = {name: _policy(EnvReader({}), _table(entry.get("guard", {}),
                                                   f"tenants.{name}.guard"),
                             default, f"tenants.{name}.guard", only_actions=True)
               for name, entry in _table(config.get("tenants", {}), "tenants").items()
               if isinstance(entry, dict) and "guard" in entry}
    hold_ms = table.get("hold_ms", 100)
    buffer_chars = table.get("buffer_chars", 400)
    _check_number(hold_ms, "guard.hold_ms", MIN_HOLD_MS, 10_000)
    _check_number(buffer_chars, "guard.buffer_chars", 2 * MAX_HOLD_BACK, 100_000)
    return GuardSettings(
        detectors=(*_detectors(env, table), *_blocked_patterns(table)),
        policy=default,
        tenant_policies=tenants,
        hold_s=env.number("GUARD_HOLD_MS", float(hold_ms), float, MIN_HOLD_MS, 10_000.0) / 1000,
        buffer_chars=env.number("GUARD_BUFFER_CHARS", int(buffer_chars), int,
                                2 * MAX_HOLD_BACK, 100_000),
        moderation=_moderation(env),
    )


def _policy(env: EnvReader, table: Mapping[str, Any], base: GuardPolicy, where: str, *,
            only_actions: bool = False) -> GuardPolicy:
    if only_actions:
        unknown = sorted(set(table) - set(_ACTION_KEYS))
        if unknown:
            raise SettingsError(f"{CONFIG_VAR}: {where}.{unknown[0]}",
                                f"unknown key; known: {', '.join(sorted(_ACTION_KEYS))}")
    actions: dict[str, Any] = {}
    for key, choices in _ACTION_KEYS.items():
        value = table.get(key, getattr(base, key))
        if value not in choices:
            raise SettingsError(f"{CONFIG_VAR}: {where}.{key}",
                                f"must be one of {', '.join(choices)}")
        actions[key] = env.choice(f"GUARD_{key.upper()}", value, choices)
    return GuardPolicy(**actions)


def _detectors(env: EnvReader, table: Mapping[str, Any]) -> list[Detector]:
    raw = env.raw("GUARD_DETECTORS")
    where = "GUARD_DETECTORS" if raw is not None else f"{CONFIG_VAR}: guard.detectors"
    if raw is not None:
        names = [name.strip() for name in raw.split(",") if name.strip()]
        if raw.strip().lower() == "none":
            names = []
    else:
        names = table.get("detectors", list(BUILTIN))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SettingsError(where, "must be a list of detector names")
    detectors: list[Detector] = []
    for name in names:
        try:
            detector = load_detector(name, BUILTIN)
        except DetectorError as exc:
            raise SettingsError(where, str(exc)) from None
        if any(known.name == detector.name for known in detectors):
            raise SettingsError(where, f"two detectors are named {detector.name!r}")
        detectors.append(detector)
    return detectors


def _blocked_patterns(table: Mapping[str, Any]) -> list[Detector]:
    where = f"{CONFIG_VAR}: guard.blocked_patterns"
    patterns = table.get("blocked_patterns", [])
    if not isinstance(patterns, list):
        raise SettingsError(where, "must be a list of regular expressions")
    detectors: list[Detector] = []
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern:
            raise SettingsError(f"{where}[{index}]", "must be a non-empty string")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise SettingsError(f"{where}[{index}]", f"is not a valid regular expression: "
                                                     f"{exc.msg}") from None
        if compiled.fullmatch(""):
            raise SettingsError(f"{where}[{index}]", "matches empty text")
        detectors.append(PatternDetector(f"blocked_pattern_{index}", "blocked", compiled,
                                         reach=BLOCKED_PATTERN_REACH))
    return detectors


def _moderation(env: EnvReader) -> ModerationSettings:
    backend = env.choice("MODERATION", "off", ("off", "openai"))
    if backend == "off":
        return ModerationSettings()
    key = env.raw("OPENAI_API_KEY")
    if key is None:
        raise SettingsError("MODERATION", "openai moderation needs OPENAI_API_KEY")
    return ModerationSettings(
        backend="openai",
        model=env.text("MODERATION_MODEL", "omni-moderation-latest"),
        on_error="open" if env.choice("MODERATION_ON_ERROR", "closed",
                                      ("open", "closed")) == "open" else "closed",
        timeout_s=env.number("MODERATION_TIMEOUT_S", 2.0, float, 0.1, 60.0),
        api_key=Secret(key),
        base_url=env.raw("OPENAI_BASE_URL"),
    )


def _table(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(f"{CONFIG_VAR}: {name}", "must be a table")
    return value


def _check_number(value: object, where: str, low: int, high: int) -> None:
    if type(value) not in (int, float) or not low <= value <= high:  # type: ignore[operator]
        raise SettingsError(f"{CONFIG_VAR}: {where}", f"must be a number from {low} to {high}")
