"""Golden eval cases: the JSONL case file `hello-ship eval` runs, and judging one result.

One JSON object per line; blank lines and lines whose first non-blank characters are `//` or
`#` are skipped:

    {"id": "refund-policy", "input": "How do refunds work?", "checks": [{"contains": "refund"}]}
    {"id": "multi", "messages": [{"role": "user", "content": "Hi"}], "checks": [...],
     "tags": ["smoke"], "max_tokens": 64, "endpoint": "chat"}

Unknown keys, duplicate keys and malformed values fail the whole load with `file:line`, so a
typo never becomes a check that silently passes. The check syntax is in tools.eval_checks. A case
without an `error_code` check also gets an implicit blocking `no error` check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tools.eval_checks import (
    NO_ERROR,
    Check,
    CheckOutcome,
    ErrorCodeCheck,
    MaxTtftCheck,
    Result,
    SpecError,
    describe,
    parse_check,
    run_check,
    text_value,
)

__all__ = ["Case", "CaseFileError", "Check", "CheckOutcome", "Endpoint", "Result",
           "case_passed", "load_cases", "parse_case"]

Endpoint = Literal["chat", "stream"]
_KEYS = ("id", "input", "messages", "checks", "tags", "max_tokens", "endpoint")
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,80}")
_ROLES = ("user", "assistant", "system")  # the roles app.schemas accepts


class CaseFileError(ValueError):
    def __init__(self, path: str, line: int, problem: str) -> None:
        # Line 0 means the file as a whole (unreadable, or no cases in it).
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    checks: tuple[Check, ...]
    tags: tuple[str, ...] = ()
    max_tokens: int | None = None
    endpoint: Endpoint = "stream"
    line: int = 0  # 1-based line in the case file

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": role, "content": content} for role, content in self.messages]}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def evaluate(self, result: Result) -> list[CheckOutcome]:
        expects_error = any(isinstance(check, ErrorCodeCheck) for check in self.checks)
        checks = self.checks if expects_error else (NO_ERROR, *self.checks)
        return [run_check(check, result) for check in checks]


def case_passed(outcomes: Iterable[CheckOutcome]) -> bool:
    return all(outcome.passed or not outcome.blocking for outcome in outcomes)


def load_cases(path: str | Path) -> list[Case]:
    name = str(path)
    cases: list[Case] = []
    first_seen: dict[str, int] = {}
    for number, text in enumerate(_read_lines(Path(path), name), start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith(("//", "#")):
            continue
        case = parse_case(text, path=name, line=number)
        if case.id in first_seen:
            raise CaseFileError(name, number,
                                f"duplicate id {case.id!r} (first on line {first_seen[case.id]})")
        first_seen[case.id] = number
        cases.append(case)
    if not cases:
        raise CaseFileError(name, 0, "no cases (every line is blank or a comment)")
    return cases


def _read_lines(path: Path, name: str) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaseFileError(name, 0, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaseFileError(name, data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8") from None
    # Not splitlines(): it also splits on U+2028 and friends, which JSON strings may hold raw,
    # and the line numbers would then disagree with the editor's.
    return [line.removesuffix("\r") for line in text.split("\n")]


def parse_case(text: str, *, path: str, line: int) -> Case:
    try:
        return _case(_json_object(text), line)
    except SpecError as exc:
        raise CaseFileError(path, line, str(exc)) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except SpecError:
        raise
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long, nesting too deep
        raise SpecError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SpecError(f"each line must be a JSON object, got {describe(value)}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; the first would silently stop counting.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise SpecError(f"key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def _case(raw: dict[str, Any], line: int) -> Case:
    unknown = [key for key in raw if key not in _KEYS]
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    case = Case(id=_id(raw.get("id")), messages=_messages(raw), checks=_checks(raw.get("checks")),
                tags=_tags(raw.get("tags")), max_tokens=_max_tokens(raw.get("max_tokens")),
                endpoint=_endpoint(raw.get("endpoint")), line=line)
    if case.endpoint == "chat":
        for index, check in enumerate(case.checks):
            if isinstance(check, MaxTtftCheck):
                raise SpecError(f'checks[{index}]: max_ttft_ms needs "endpoint": "stream" '
                                "(a chat reply has no first token)")
    return case


def _id(value: object) -> str:
    if value is None:
        raise SpecError("missing 'id'")
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise SpecError(f"id must be 1-80 characters of A-Z a-z 0-9 _ . : -, "
                        f"got {describe(value)}")
    return value


def _messages(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if ("input" in raw) == ("messages" in raw):
        raise SpecError("give exactly one of 'input' (a string) or 'messages' (a list)")
    if "input" in raw:
        return (("user", text_value(raw["input"], "input")),)
    items = raw["messages"]
    if not isinstance(items, list) or not items:
        raise SpecError(f"messages must be a non-empty list, got {describe(items)}")
    return tuple(_message(item, f"messages[{index}]") for index, item in enumerate(items))


def _message(item: object, where: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise SpecError(f"{where} must be an object with 'role' and 'content', "
                        f"got {describe(item)}")
    extra = [key for key in item if key not in ("role", "content")]
    if extra:
        raise SpecError(f"{where}: unknown key {extra[0]!r} (known: role, content)")
    role = item.get("role")
    if role not in _ROLES:
        raise SpecError(f"{where}.role must be one of {', '.join(_ROLES)}, got {describe(role)}")
    return role, text_value(item.get("content"), f"{where}.content")


def _checks(value: object) -> tuple[Check, ...]:
    if value is None:
        raise SpecError("missing 'checks' (a non-empty list)")
    if not isinstance(value, list) or not value:
        raise SpecError(f"checks must be a non-empty list, got {describe(value)}")
    checks = tuple(parse_check(item, f"checks[{index}]") for index, item in enumerate(value))
    codes = [index for index, check in enumerate(checks) if isinstance(check, ErrorCodeCheck)]
    if len(codes) > 1:
        raise SpecError(f"checks[{codes[1]}]: a case can expect only one error_code")
    return checks


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(f"tags must be a list of strings, got {describe(value)}")
    return tuple(text_value(tag, f"tags[{index}]") for index, tag in enumerate(value))


def _max_tokens(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SpecError(f"max_tokens must be a positive integer, got {describe(value)}")
    return value


def _endpoint(value: object) -> Endpoint:
    if value is None or value == "stream":
        return "stream"
    if value == "chat":
        return "chat"
    raise SpecError(f'endpoint must be "chat" or "stream", got {describe(value)}')
