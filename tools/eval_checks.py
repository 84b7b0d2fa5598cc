"""The checks a golden eval case makes on one result, and how each is written in a case file.

Each check is an object with exactly one check key, plus optional modifiers:

    {"contains": "refund"}         case-insensitive unless "case_sensitive": true
    {"not_contains": "as an AI"}   case-insensitive unless "case_sensitive": true
    {"regex": "\\d+ days"}         re.search; case-sensitive unless "case_sensitive": false
    {"equals": "Paris"}            the answer with surrounding whitespace stripped; case-sensitive
                                   unless "case_sensitive": false
    {"json_valid": true}           the answer is strict JSON; one surrounding ``` fence (with or
                                   without a language tag) is removed first
    {"max_chars": 500}             the answer has at most this many characters
    {"error_code": "input_blocked"}  the request ends with this error code
    {"max_ttft_ms": 800}           time to first token; non-blocking unless "blocking": true

Every check takes "blocking": a failed non-blocking check is reported but does not fail the case.
A detail quotes at most a short stretch of the answer, so a report never turns into a dump of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeAlias

import orjson

SNIPPET = 60


class SpecError(ValueError):
    """A malformed case or check; the loader adds the file name and line number."""


@dataclass(frozen=True, slots=True)
class Result:
    answer: str
    http_status: int
    error_code: str | None  # envelope `error.code`, or the SSE error frame's `code`
    ttft_ms: float | None
    latency_ms: float
    request_id: str | None = None  # for the report, so a failure can be looked up in the logs
    model_route: str | None = None  # the route the answer names as its own
    error_detail: str | None = None  # what was malformed, for `malformed_response`

    @property
    def error(self) -> str:
        """The error as a detail names it, with what went wrong when the runner knows."""
        detail = f": {self.error_detail}" if self.error_detail else ""
        return f"{self.error_code or 'no error'}{detail} (HTTP {self.http_status})"


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    check: str
    passed: bool
    blocking: bool
    detail: str


def quote(text: str, limit: int = SNIPPET) -> str:
    clipped = text if len(text) <= limit else text[:limit] + "…"
    # JSON quoting keeps a detail on one line whatever newlines or quotes the answer holds.
    return json.dumps(clipped, ensure_ascii=False)


def _starting(answer: str) -> str:
    return f"answer starting {quote(answer)}" if answer else "an empty answer"


@dataclass(frozen=True, slots=True)
class SearchCheck:
    kind: Literal["contains", "not_contains", "regex"]
    text: str  # the literal text, or the pattern for a regex
    case_sensitive: bool
    blocking: bool = True

    @property
    def name(self) -> str:
        if self.kind == "regex":
            return f"regex /{self.text[:40]}/{'' if self.case_sensitive else 'i'}"
        return f"{self.kind} {quote(self.text, 40)}{' (case-sensitive)' * self.case_sensitive}"

    def failure(self, result: Result) -> str | None:
        pattern = self.text if self.kind == "regex" else re.escape(self.text)
        # Searching with IGNORECASE rather than lowering both keeps match offsets true to the
        # answer: lower() changes the length of some characters.
        found = re.search(pattern, result.answer, 0 if self.case_sensitive else re.IGNORECASE)
        answer = result.answer
        if self.kind == "not_contains":
            if found is None:
                return None
            start = max(0, found.start() - 30)
            context = "…" * (start > 0) + answer[start:found.end() + 30]
            return (f"answer contains {quote(self.text, 40)} at char {found.start()}: "
                    f"{quote(context, 80)}")
        if found is not None:
            return None
        if self.kind == "contains":
            return f"answer ({len(answer)} chars) does not contain {quote(self.text, 40)}"
        return f"no match for /{self.text[:40]}/ in {_starting(answer)}"


@dataclass(frozen=True, slots=True)
class EqualsCheck:
    text: str
    case_sensitive: bool = True
    blocking: bool = True

    @property
    def name(self) -> str:
        return f"equals {quote(self.text, 40)}{' (any case)' * (not self.case_sensitive)}"

    def failure(self, result: Result) -> str | None:
        got = result.answer.strip()
        same = got == self.text if self.case_sensitive else got.casefold() == self.text.casefold()
        return None if same else f"expected {quote(self.text, 40)}, got {quote(got)}"


_FENCE = re.compile(r"\A```(?:[\w+-]*\n)?(.*?)\n?```\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class JsonValidCheck:
    blocking: bool = True

    @property
    def name(self) -> str:
        return "json_valid"

    def failure(self, result: Result) -> str | None:
        text = result.answer.strip()
        fenced = _FENCE.match(text)
        try:
            orjson.loads(fenced.group(1) if fenced else text)
        except orjson.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg}) in {_starting(result.answer)}"
        return None


@dataclass(frozen=True, slots=True)
class MaxCharsCheck:
    limit: int
    blocking: bool = True

    @property
    def name(self) -> str:
        return f"max_chars {self.limit}"

    def failure(self, result: Result) -> str | None:
        size = len(result.answer)
        return None if size <= self.limit else f"answer has {size} chars, over {self.limit}"


@dataclass(frozen=True, slots=True)
class ErrorCodeCheck:
    code: str
    blocking: bool = True

    @property
    def name(self) -> str:
        return f"error_code {self.code}"

    def failure(self, result: Result) -> str | None:
        if result.error_code == self.code:
            return None
        return f"expected error {self.code}, got {result.error}"


@dataclass(frozen=True, slots=True)
class MaxTtftCheck:
    limit_ms: float
    blocking: bool = False  # latency is noisy; a slow run should be seen, not fail the suite

    @property
    def name(self) -> str:
        return f"max_ttft_ms {self.limit_ms:g}"

    def failure(self, result: Result) -> str | None:
        if result.ttft_ms is None:
            return "no time to first token (no token arrived)"
        if result.ttft_ms <= self.limit_ms:
            return None
        return f"ttft {result.ttft_ms:.1f} ms, over {self.limit_ms:g} ms"


@dataclass(frozen=True, slots=True)
class NoErrorCheck:
    """Added to every case without an error_code check, so an error never passes unnoticed."""

    blocking: bool = True

    @property
    def name(self) -> str:
        return "no error"

    def failure(self, result: Result) -> str | None:
        if result.error_code is not None:
            return f"error {result.error}"
        if result.http_status >= 400:
            return f"HTTP {result.http_status} with no error code"
        return None


Check: TypeAlias = (SearchCheck | EqualsCheck | JsonValidCheck | MaxCharsCheck | ErrorCodeCheck
                    | MaxTtftCheck | NoErrorCheck)
NO_ERROR = NoErrorCheck()


def run_check(check: Check, result: Result) -> CheckOutcome:
    detail = check.failure(result)
    return CheckOutcome(check.name, detail is None, check.blocking, detail or "")


def describe(value: object) -> str:
    """A JSON value as an error message shows it: scalars as written, containers by kind."""
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return quote(value, 40)
    return json.dumps(value)


def _bad(at: str, wanted: str, value: object) -> NoReturn:
    raise SpecError(f"{at} must be {wanted}, got {describe(value)}")


def text_value(value: object, at: str) -> str:
    if not isinstance(value, str) or not value:
        _bad(at, "a non-empty string", value)
    lone = next((char for char in value if "\ud800" <= char <= "\udfff"), None)
    if lone is not None:  # JSON may spell half a surrogate pair; no UTF-8 request can carry it
        raise SpecError(f"{at} holds a lone surrogate \\u{ord(lone):04x}, which is not text")
    return value


def _count(value: object, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _bad(at, "a positive integer", value)
    return value


def _millis(value: object, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        _bad(at, "a positive number of milliseconds", value)
    return float(value)


def _pattern(value: object, at: str, case_sensitive: bool) -> str:
    pattern = text_value(value, at)
    try:
        re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise SpecError(f"{at}: invalid regex {quote(pattern, 40)}: {exc}") from None
    return pattern


def _json_valid(value: object, at: str, blocking: bool) -> JsonValidCheck:
    if value is not True:
        _bad(at, "true", value)
    return JsonValidCheck(blocking)


_Builder = Callable[[object, str, bool, bool], Check]
_BUILDERS: dict[str, _Builder] = {
    "contains": lambda v, at, cs, b: SearchCheck("contains", text_value(v, at), cs, b),
    "not_contains": lambda v, at, cs, b: SearchCheck("not_contains", text_value(v, at), cs, b),
    "regex": lambda v, at, cs, b: SearchCheck("regex", _pattern(v, at, cs), cs, b),
    "equals": lambda v, at, cs, b: EqualsCheck(text_value(v, at), cs, b),
    "json_valid": lambda v, at, cs, b: _json_valid(v, at, b),
    "max_chars": lambda v, at, cs, b: MaxCharsCheck(_count(v, at), b),
    "error_code": lambda v, at, cs, b: ErrorCodeCheck(text_value(v, at), b),
    "max_ttft_ms": lambda v, at, cs, b: MaxTtftCheck(_millis(v, at), b),
}
CHECK_KINDS = tuple(_BUILDERS)
_CASE_SENSITIVE = {"contains": False, "not_contains": False, "regex": True, "equals": True}


def _flag(raw: dict[str, object], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        _bad(f"{where}.{key}", "true or false", value)
    return value


def parse_check(raw: object, where: str) -> Check:
    """`where` (e.g. "checks[1]") starts every error message."""
    if not isinstance(raw, dict):
        _bad(where, 'an object such as {"contains": "text"}', raw)
    kinds = [key for key in raw if key in _BUILDERS]
    if not kinds:
        stray = [key for key in raw if key not in ("blocking", "case_sensitive")]
        problem = f"unknown check {stray[0]!r}" if stray else "no check"
        raise SpecError(f"{where}: {problem} (known: {', '.join(CHECK_KINDS)})")
    if len(kinds) > 1:
        raise SpecError(f"{where}: one check per object, got {' and '.join(kinds)}")
    kind = kinds[0]
    modifiers = ("blocking", "case_sensitive") if kind in _CASE_SENSITIVE else ("blocking",)
    for key in raw:
        if key != kind and key not in modifiers:
            raise SpecError(f"{where}: unknown key {key!r} for {kind} "
                            f"(allowed: {', '.join(modifiers)})")
    blocking = _flag(raw, "blocking", kind != "max_ttft_ms", where)
    case_sensitive = _flag(raw, "case_sensitive", _CASE_SENSITIVE.get(kind, True), where)
    return _BUILDERS[kind](raw[kind], f"{where}.{kind}", case_sensitive, blocking)
