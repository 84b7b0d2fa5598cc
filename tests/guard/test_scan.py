"""Scanning text in pieces: look-back across releases, hold-back of values still growing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guard.builtin import BUILTIN
from guard.detectors import Category, Finding, PatternDetector
from guard.scan import MAX_HOLD_BACK, Scanner, cut_off_end, redact, settled_cut
from guard.text import strip_format

DIGITS = PatternDetector("digits", "pii", r"\d{4}(?:[ ]\d{4}){3}", reach=40)
KEY = PatternDetector("key", "secret", r"sk-[a-z0-9]{10,}", reach=200)


@pytest.mark.parametrize(("text", "cut", "settled"), [
    # a cut inside a word moves to the word's start
    ("Mail jane.doe@exa", 17, 5),
    # at the end of what is held, the last word may still grow: it is held back
    ("Mail jane.doe@example.", 22, 5),
    # a word that ended (a space follows) is complete
    ("Mail jane.doe@example.com now", 26, 26),
    # digit groups split by single spaces may grow into a card number
    ("Card 4111 1111 ", 15, 5),
    ("Card 4111 1111 1111 1111 ok", 15, 5),
    ("Card 4111 1111 1111 1111 ok", 25, 25),
    ("Call (555) 123-4567", 19, 5),
    ("Call +1 (", 9, 5),
    ("IBAN GB29 NWBK 6016", 19, 5),
    # text that ends with a character no detected value contains is released whole
    ("Hello there!", 12, 12),
    ("Hello there! How", 12, 12),
    ("", 0, 0),
    # other scripts' letters are no part of a value: a cut moves to where the value starts
    ("请联系jane.doe@exa", 15, 3),
    ("卡号4111 1111", 11, 2),
    ("邮箱müller@fir", 12, 2),
    # ... and a clause of them is no run to hold back
    ("这是一个没有标点的很长的句子" * 10, 140, 140),
    # typographic spaces and dashes, invisible characters: still one run
    ("Card 4111\u00a01111\u00a0", 15, 5),
    ("Call 555\u2011123\u2011", 13, 5),
    ("IBAN GB29\u202fNWBK\u202f6016", 19, 5),
    ("号码4111\u200b1111", 11, 2),
    ("Card 4111\u200b 1111 ", 16, 5),
    # digit groups that continue a word take the whole word back with them
    ("ref ab12 3456", 13, 4),
])
def test_a_release_point_never_splits_what_may_be_one_value(text: str, cut: int,
                                                           settled: int) -> None:
    assert settled_cut(text, cut) == settled


def test_of_a_long_run_only_the_most_any_value_needs_is_held_back() -> None:
    text = "x" * (MAX_HOLD_BACK + 10)
    assert settled_cut(text, len(text)) == 10
    # a value at the end of a long run is still kept whole
    url = "See https://docs.example.com/" + "a" * 120 + "/contact/jane.doe"
    assert url[settled_cut(url, len(url)):].endswith("/contact/jane.doe")
    numbers = "12 " * 50 + "4111 1111"
    assert numbers[settled_cut(numbers, len(numbers)):].endswith("4111 1111")


def test_a_finding_covers_the_invisible_characters_inside_it() -> None:
    scanner = Scanner([DIGITS])
    text = "Card 4111\u200b 1111 11\u2060\u206011 1111\u200b ok"
    (finding,) = scanner.findings(text)
    assert text[finding.start:finding.end] == "4111\u200b 1111 11\u2060\u206011 1111"
    # `since` counts characters as written, invisible ones included
    assert scanner.findings(text, since=finding.end) == []
    assert scanner.findings(text, since=finding.end - 1) == [finding]
    assert scanner.redact(text) == "Card [redacted:digits]\u200b ok"


def test_a_context_stripped_by_the_caller_is_not_searched_again() -> None:
    scanner = Scanner([DIGITS])
    context, fresh = "Card 4111 1111", " 11\u200b11 1111 ok"
    text = context + fresh
    findings = scanner.findings(text, since=len(context), stripped_upto=len(context))
    assert findings == scanner.findings(text, since=len(context))
    assert [text[f.start:f.end] for f in findings] == ["4111 1111 11\u200b11 1111"]


def test_findings_reach_back_across_the_seam() -> None:
    scanner = Scanner([DIGITS])
    released, new = "Card 4111 1111", " 1111 1111 ok"
    text = released + new
    (finding,) = scanner.findings(text, since=len(released))
    assert text[finding.start:finding.end] == "4111 1111 1111 1111"
    # what lies wholly in released text is not reported again
    assert scanner.findings(text + " and more", since=len(text)) == []


def test_each_detector_looks_back_only_its_reach() -> None:
    scanner = Scanner([DIGITS, KEY])
    assert scanner.reach == 200
    text = "sk-" + "a" * 100 + "b" * 5
    findings = scanner.findings(text, since=len(text) - 5)
    assert [f.detector for f in findings] == ["key"]
    assert findings[0].start == 0


def test_redact_names_the_detector_and_merges_overlaps() -> None:
    scanner = Scanner([DIGITS, KEY])
    assert scanner.redact("a 4111 1111 1111 1111 b sk-abcdefghijk") == (
        "a [redacted:digits] b [redacted:key]")
    text = "start sk-abcdefghijkl tail"
    findings = scanner.findings(text, since=12)
    # the key began in released text: its rest is dropped, or marked when asked
    assert redact(text, findings, 12, continued="") == " tail"
    assert redact(text, findings, 12) == "[redacted:key] tail"


KEY_START = "sk-" + "proj-AbCdEfGhIjK"


@pytest.mark.parametrize(("text", "released"), [
    ("That is all.", "That is all."),
    ("Your task-", "Your task-"),
    ("Call me at 555-12", "Call me at "),
    ("Write to jane.doe@exa", "Write to "),
    # a word that starts like a secret is held back, though too short yet to be a key
    (f"Your key is {KEY_START}", "Your key is "),
    (f"export OPENAI_API_KEY={KEY_START}", "export "),
    (f"密钥{KEY_START}", "密钥"),
    ("Bearer eyJhbGciOiJIUzI1", "Bearer "),
    ("Use s\u200bk-proj-AbC", "Use "),
])
def test_a_broken_off_answer_keeps_back_what_may_be_half_a_value(text: str,
                                                                released: str) -> None:
    assert text[:cut_off_end(text)] == released


def test_a_half_key_is_too_short_for_the_detector() -> None:
    """Why the cut-off rule is needed: no detector recognises what `cut_off_end` keeps back."""
    assert Scanner(list(BUILTIN.values())).findings(f"Your key is {KEY_START}") == []


def finding(start: int, end: int, detector: str) -> Finding:
    return Finding(start, end, detector, "pii")


@pytest.mark.parametrize(("findings", "since", "continued", "redacted"), [
    # each value its own placeholder, even when one ends where the next begins
    ([finding(0, 4, "a"), finding(4, 8, "b")], 0, None, "[redacted:a][redacted:b] 9012"),
    # overlapping values share the first one's placeholder, whatever follows them
    ([finding(0, 6, "a"), finding(4, 8, "b"), finding(10, 14, "c")], 0, None,
     "[redacted:a] 9[redacted:c]"),
    ([finding(0, 8, "long"), finding(0, 4, "short")], 0, None, "[redacted:long] 9012"),
    # only text[since:] is written: a value wholly before it is no part of it ...
    ([finding(0, 4, "a"), finding(10, 14, "c")], 4, None, "5678 9[redacted:c]"),
    ([finding(0, 4, "a")], 4, "", "5678 9012"),
    # ... one that began before it is its continuation ...
    ([finding(2, 6, "a")], 4, "", "78 9012"),
    ([finding(2, 6, "a")], 4, None, "[redacted:a]78 9012"),
    # ... and one that begins right at it is a value of its own
    ([finding(4, 8, "a")], 4, "", "[redacted:a] 9012"),
])
def test_redact_writes_placeholders_over_the_text_after_since(
        findings: list[Finding], since: int, continued: str | None, redacted: str) -> None:
    assert redact("12345678 9012", findings, since, continued) == redacted


class EmptyMatches:
    """A plugged-in detector that reports an empty span (a lookahead, say)."""

    name = "empty"
    category: Category = "pii"
    reach = 8

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        yield 2, 2


def test_an_empty_match_is_no_finding() -> None:
    scanner = Scanner([EmptyMatches()])
    assert scanner.findings("abcdef") == []
    assert scanner.redact("abcdef") == "abcdef"


def test_of_two_values_starting_together_the_longer_names_the_placeholder() -> None:
    short = PatternDetector("short", "pii", r"\d{4}", reach=8)
    long = PatternDetector("long", "pii", r"\d{4} \d{4}", reach=16)
    scanner = Scanner([short, long])
    assert [(f.start, f.detector) for f in scanner.findings("pin 1234 5678")] == [
        (4, "long"), (4, "short"), (9, "short")]
    assert scanner.redact("pin 1234 5678") == "pin [redacted:long]"


def test_a_format_character_is_stripped_wherever_it_is() -> None:
    assert strip_format("\u200bjane\u2060doe\ufeff") == "janedoe"
    assert strip_format("\u200bjane") == "jane"
    assert strip_format("plain") == "plain"
