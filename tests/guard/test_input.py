"""The input guard and the policies: what a tenant's guardrails do with each finding."""

from __future__ import annotations

from collections import Counter

import pytest

from guard.builtin import BUILTIN
from guard.detectors import Category, Detector, PatternDetector
from guard.input import InputGuard
from guard.policy import GuardPolicy

FORBIDDEN = PatternDetector("blocked_pattern_0", "blocked", r"^Forbidden", reach=64)
HASH = PatternDetector("blocked_pattern_1", "blocked", r"#", reach=64)
DETECTORS: list[Detector] = [BUILTIN["email"], BUILTIN["api_key"], FORBIDDEN, HASH]
KEY = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


@pytest.mark.parametrize(("policy", "inputs", "outputs"), [
    (GuardPolicy(), ("allow", "redact", "refuse"), ("redact", "redact", "block")),
    (GuardPolicy(input_pii="refuse", input_secrets="allow", output_pii="block",
                 output_secrets="allow"),
     ("refuse", "allow", "refuse"), ("block", "allow", "block")),
])
def test_each_category_gets_its_action(policy: GuardPolicy, inputs: tuple[str, ...],
                                       outputs: tuple[str, ...]) -> None:
    categories: tuple[Category, ...] = ("pii", "secret", "blocked")
    assert tuple(policy.on_input(category) for category in categories) == inputs
    assert tuple(policy.on_output(category) for category in categories) == outputs


def test_only_the_detectors_of_categories_not_allowed_run() -> None:
    assert InputGuard(DETECTORS, GuardPolicy()).detectors == (
        BUILTIN["api_key"], FORBIDDEN, HASH)
    everything = GuardPolicy(input_pii="allow", input_secrets="allow")
    assert InputGuard([BUILTIN["email"], BUILTIN["api_key"]], everything).detectors == ()


def test_with_nothing_to_detect_the_texts_pass_as_they_are() -> None:
    guard = InputGuard([BUILTIN["email"]], GuardPolicy())
    verdict = guard.check(["write to jane@example.com", "thanks"])
    assert verdict.texts == ("write to jane@example.com", "thanks")
    assert verdict.refused is None and verdict.redactions == Counter()


def test_secrets_are_redacted_and_counted_and_other_text_is_kept() -> None:
    guard = InputGuard(DETECTORS, GuardPolicy(input_pii="redact"))
    verdict = guard.check([f"my key is {KEY}, mail jane@example.com", "nothing here",
                           f"again {KEY}"])
    assert verdict.texts == ("my key is [redacted:api_key], mail [redacted:email]",
                             "nothing here", "again [redacted:api_key]")
    assert verdict.refused is None
    assert verdict.redactions == Counter({"api_key": 2, "email": 1})


@pytest.mark.parametrize("texts", [
    ["fine", "Forbidden topic"],
    ["fine", "\u200bForbidden topic"],  # an invisible character does not hide it
    ["#"],  # nor is a one-character match at the very start missed
])
def test_a_blocked_pattern_refuses_the_whole_input(texts: list[str]) -> None:
    verdict = InputGuard(DETECTORS, GuardPolicy()).check(texts)
    assert verdict.texts == () and verdict.redactions == Counter()
    assert verdict.refused is not None
    assert verdict.refused.category == "blocked"
    assert verdict.refused.detector in ("blocked_pattern_0", "blocked_pattern_1")


def test_a_refused_category_names_the_first_finding() -> None:
    guard = InputGuard(DETECTORS, GuardPolicy(input_pii="refuse"))
    verdict = guard.check([f"key {KEY} and jane@example.com"])
    assert verdict.texts == ()
    assert verdict.refused is not None
    assert (verdict.refused.detector, verdict.refused.start) == ("email", 41)
