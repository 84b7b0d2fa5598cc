"""Scanning text in pieces: look-back across releases, hold-back of values still growing."""

from __future__ import annotations

import pytest

from guard.detectors import PatternDetector
from guard.scan import MAX_HOLD_BACK, Scanner, redact, settled_cut

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
