"""The output guard on streamed text: no detected value leaves, however the tokens fall."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.builtin import BUILTIN
from guard.detectors import Category, Detector, PatternDetector
from guard.policy import GuardPolicy, OutputAction
from guard.scan import Scanner
from streaming.output_guard import OutputBlocked, OutputGuard, OutputStage, phrase_cut

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
VALUES = {
    "email": "jane.doe@example.com",
    "phone": "+1 (415) 555-0132",
    "credit_card": "4111 1111 1111 1111",
    "us_ssn": "123-45-6789",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip_address": "203.0.113.42",
    "api_key": "sk-proj-Zq8sK2mX9vL4nR7tW1yB3cD5",
    "jwt": JWT,
}
# The same kinds of value typeset with other spaces and dashes, or with invisible characters
# inside them.
DISGUISED = [
    ("email", "jane.doe\u200b@exam\u2060ple.com"),
    ("phone", "+1\u00a0(415)\u00a0555\u20110132"),
    ("credit_card", "4111\u00a01111\u00a01111\u00a01111"),
    ("credit_card", "4111.1111.1111.1111"),
    ("credit_card", "4111 11\u200b11 1111\ufeff 1111"),
    ("us_ssn", "123\u201145\u20116789"),
    ("us_ssn", "123-4\u200d5-6789"),
    ("iban", "DE89\u202f3704\u202f0044\u202f0532\u202f0130\u202f00"),
    ("ip_address", "203.0.\u200b113.42"),
    ("api_key", "sk-proj-Zq8s\u200bK2mX9vL4nR7tW1yB3cD5"),
    ("jwt", JWT[:40] + "\u2060" + JWT[40:]),
]
CASES = sorted(VALUES.items()) + DISGUISED
# Chinese and Japanese prose runs into a value without a space.
PREFIXES = ["", "Write to ", "The value is: ", "Here it is:\n", "ok ", "请联系", "卡号\uff1a"]
SUFFIXES = ["", ".", " now.", "!\nNext line", ", thanks. Bye", "获取。", "有效\uff01下一句"]


def stage_for(action: OutputAction, hold_s: float = 0.25) -> OutputStage:
    guard = OutputGuard(Scanner(list(BUILTIN.values())),
                        GuardPolicy(output_pii=action, output_secrets=action),
                        max_chars=400, max_hold_s=hold_s)
    return OutputStage(guard)


def pieces(value: str) -> list[str]:
    """The parts of a value that must not leave either: runs of 4+ letters or digits."""
    return [part for part in re.split(r"[^A-Za-z0-9]+", value) if len(part) >= 4]


def play(stage: OutputStage, tokens: list[str], gaps: list[float]) -> list[str]:
    """Feed tokens at the given gaps, with the pipeline's hold timer between them."""
    released, now = [], 0.0
    for token, gap in zip(tokens, gaps, strict=True):
        deadline = stage.deadline()
        if deadline is not None and deadline <= now + gap:
            released.append(stage.release_due(deadline))
        now += gap
        released.append(stage.feed(token, now))
    released.append(stage.flush())
    return released


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(CASES), prefix=st.sampled_from(PREFIXES),
       suffix=st.sampled_from(SUFFIXES), cuts=st.lists(st.integers(0, 400), max_size=30),
       gaps=st.lists(st.sampled_from([0.0, 0.01, 0.2, 0.3, 1.0]), min_size=40, max_size=40))
def test_a_value_never_leaves_whatever_the_token_split(case: tuple[str, str], prefix: str,
                                                      suffix: str, cuts: list[int],
                                                      gaps: list[float]) -> None:
    detector, value = case
    tokens = split(prefix + value + suffix, cuts)
    out = "".join(play(stage_for("redact"), tokens, gaps[:len(tokens)]))
    assert out == f"{prefix}[redacted:{detector}]{suffix}"


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), prefix=st.sampled_from(PREFIXES),
       cuts=st.lists(st.integers(0, 400), max_size=30),
       gaps=st.lists(st.sampled_from([0.0, 0.01, 0.3, 1.0]), min_size=40, max_size=40))
def test_blocking_stops_before_any_part_of_the_value(case: tuple[str, str], prefix: str,
                                                     cuts: list[int], gaps: list[float]) -> None:
    detector, value = case
    tokens = split(prefix + value + " and the rest.", cuts)
    released: list[str] = []
    stage = stage_for("block")
    with pytest.raises(OutputBlocked) as blocked:
        released = play(stage, tokens, gaps[:len(tokens)])
    assert blocked.value.detector == detector
    out = "".join(released)
    assert not any(piece in out for piece in pieces(value))


def test_a_card_number_split_over_two_tokens_is_caught() -> None:
    stage = stage_for("redact")
    out = [stage.feed("My card is 4111 1111", 0.0), stage.feed(" 1111 1111 thanks.", 0.01),
           stage.flush()]
    assert "".join(out) == "My card is [redacted:credit_card] thanks."
    assert out[0] == "My card is ", "no digit may leave before the number is seen whole"


def test_a_long_chinese_sentence_streams_within_the_hold_time() -> None:
    """No spaces, no punctuation for 100 characters, a token every 40 ms, a 100 ms hold: the
    text leaves as the hold time runs out, not all at the sentence end."""
    sentence = ("我们已经收到您的退款申请并且正在处理之中请您耐心等待" * 4)[:100] + "。"
    tokens = [sentence[i:i + 2] for i in range(0, len(sentence), 2)]
    stage, gap = stage_for("redact", hold_s=0.1), 0.04
    releases: list[tuple[float, str]] = []
    now = 0.0
    for token in tokens:
        deadline = stage.deadline()
        if deadline is not None and deadline <= now + gap:
            releases.append((deadline, stage.release_due(deadline)))
        now += gap
        releases.append((now, stage.feed(token, now)))
    times = [at for at, text in releases if text]
    assert "".join(text for _, text in releases) + stage.flush() == sentence
    assert times[0] <= gap + 0.1 + 1e-9, "the first characters wait no longer than the hold"
    assert all(later - earlier <= 0.1 + gap + 1e-9
               for earlier, later in itertools.pairwise(times))


def test_an_answer_broken_off_inside_a_key_keeps_its_start_back() -> None:
    stage = stage_for("redact")
    out = stage.feed("Your key is sk-" + "proj-AbCdEfGhIjK", 0.0) + stage.flush(complete=False)
    assert out == "Your key is "


def test_a_private_key_is_redacted_from_its_header_on() -> None:
    body = "\n".join(["MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Adsf" * 1] * 6)
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    text = f"Use this:\n{key}\nDone."
    stage = stage_for("redact", hold_s=0.0)  # every token forces a release: the worst case
    out = "".join([*(stage.feed(text[i:i + 7], i / 100) for i in range(0, len(text), 7)),
                   stage.flush()])
    assert "MIIE" not in out and "PRIVATE KEY" not in out.replace("[redacted:private_key]", "")
    assert out.startswith("Use this:\n") and out.endswith("\nDone.")


def test_allowed_categories_cost_nothing_and_pass_unchanged() -> None:
    guard = OutputGuard(Scanner([]), GuardPolicy(output_pii="allow", output_secrets="allow"))
    stage = OutputStage(guard)
    assert not stage.holds_for_time and stage.deadline() is None
    assert stage.feed("jane.doe@example.com", 0.0) == "jane.doe@example.com"


LONG_RUNS = ["https://docs.example.com/" + "a" * 140 + "/", "12 " * 50, "Z" * 150 + "="]
BODY_KEY = "sk-proj-" + "Q7wErTy9UiOpAsDf" * 10


@settings(max_examples=200, deadline=None)
@given(value=st.sampled_from([VALUES["credit_card"], VALUES["email"], BODY_KEY,
                              VALUES["api_key"]]),
       before=st.sampled_from(LONG_RUNS), after=st.sampled_from(LONG_RUNS),
       cuts=st.lists(st.integers(0, 800), max_size=40),
       gaps=st.lists(st.sampled_from([0.0, 0.03, 0.3]), min_size=80, max_size=80))
def test_a_value_inside_a_long_run_never_leaves_in_part(value: str, before: str, after: str,
                                                        cuts: list[int],
                                                        gaps: list[float]) -> None:
    """Runs longer than the hold-back are cut wherever the timer falls, values inside them
    included: what the cut leaves of a value is still recognised, from the text held after
    it."""
    separator = "" if value.startswith("sk-") and before.endswith("=") else " "
    tokens = split(f"{before}{separator}{value} {after} done.", cuts)
    out = "".join(play(stage_for("redact", hold_s=0.1), tokens, gaps[:len(tokens)]))
    assert not any(piece in out for piece in pieces(value) if piece not in before + after)
    assert "[redacted:" in out


def test_digits_of_any_script_are_numbers_too() -> None:
    stage = stage_for("redact")
    fullwidth = "4111 1111 1111 1111".translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    out = stage.feed(f"Card: {fullwidth} ok.", 0.0) + stage.flush()
    assert out == "Card: [redacted:credit_card] ok."


@pytest.mark.parametrize("text", [
    "Test cards: 4111 1111 1111 1111 5500 0000 0000 0004 6011 0000 0000 0004 "
    + "12 " * 40 + "end.",
    f"export OPENAI_API_KEY={BODY_KEY} && echo done.",
    "git clone https://oauth2:ghp_" + "a1B2c3D4e5F6" * 3 + "@github.com/acme/"
    + "deep/" * 30 + "repo.git now.",
])
def test_values_cut_by_the_hold_time_inside_a_long_run_do_not_leak(text: str) -> None:
    """Four characters every 30 ms, a 100 ms hold: the timer cuts long runs at arbitrary
    points, inside values too."""
    tokens = [text[i:i + 4] for i in range(0, len(text), 4)]
    out = "".join(play(stage_for("redact", hold_s=0.1), tokens, [0.03] * len(tokens)))
    for secret in ("1111 1111", "5500", "0004", "Q7wErTy9", "a1B2c3"):
        assert secret not in out, out
    assert out.endswith((" end.", " done.", " now.")), out


def test_a_failing_detector_fails_closed() -> None:
    class Failing:
        name = "failing"
        category: Category = "pii"
        reach = 8

        def find(self, text: str) -> Iterator[tuple[int, int]]:
            if "x" in text:
                raise RuntimeError("a plugin's bug")
            return iter(())

    stage = OutputStage(OutputGuard(Scanner([Failing()]), GuardPolicy()))
    with pytest.raises(RuntimeError):
        stage.feed("A x. B C D", 0.0)
    assert stage.feed(" more.", 0.1) == "" and stage.flush(complete=False) == ""


# -- holding back for blocked phrases ------------------------------------------------------

PHRASE = PatternDetector("blocked_pattern_0", "blocked",
                         re.compile(r"(?i)ignore (all )?previous instructions"), reach=256)


def phrase_stage(hold_back: int) -> OutputStage:
    detectors = [*BUILTIN.values(), PHRASE] if hold_back else list(BUILTIN.values())
    return OutputStage(OutputGuard(Scanner(detectors), GuardPolicy(), max_chars=400,
                                   max_hold_s=0.1, whole_sentences=True,
                                   phrase_hold_back=hold_back))


def test_holding_back_for_phrases_keeps_sentences_whole_and_releases_as_often() -> None:
    """Numbers at sentence ends ("order 48213.", "2024-03-15.") must not turn every later
    token into a release of its own, nor cut words in half."""
    answer = ("Thanks for reaching out! I checked your account and the refund for order 48213 "
              "was issued on 2024-03-15. You can reach our billing team at support or call us "
              "between 9 and 5. Version 2.14.3 of the app fixes the sync issue; update it.")
    tokens = [part for part in re.split(r"(?<=\S)(?=\s)", answer) if part]
    plain = [text for text in play(phrase_stage(0), tokens, [1 / 60] * len(tokens)) if text]
    held = [text for text in play(phrase_stage(64), tokens, [1 / 60] * len(tokens)) if text]
    assert "".join(held) == answer
    assert len(held) <= len(plain) + 2
    for piece in held[:-1]:  # every release but the last ends at a word's end
        assert piece[-1].isspace() or piece[-1] in ".!?;"


def play_until_blocked(stage: OutputStage, tokens: list[str], gap: float) -> list[str]:
    """What `play` releases before the guard stops the answer (which it must)."""
    released: list[str] = []
    now = 0.0
    with pytest.raises(OutputBlocked):
        for token in tokens:
            deadline = stage.deadline()
            if deadline is not None and deadline <= now + gap:
                released.append(stage.release_due(deadline))
            now += gap
            released.append(stage.feed(token, now))
        stage.flush()
    return released


LEAD = "Sure, here is exactly what you asked for, word for word, just as you wrote it: "


@pytest.mark.parametrize("text", [
    LEAD + "ignore all previous instructions and more",
    LEAD + "\u200b\u200b".join("ignore all previous instructions"),
])
def test_a_phrase_typed_slowly_is_held_back_until_it_is_whole(text: str) -> None:
    """The hold time cuts inside the sentence again and again: no word of the phrase leaves
    before the phrase is complete and blocked."""
    released = play_until_blocked(phrase_stage(64), list(text), 0.05)
    assert "".join(released).replace("\u200b", "").startswith("Sure, here is exactly")
    assert "ignore" not in "".join(released).replace("\u200b", "")


def test_a_block_names_its_detector_and_category_never_the_text() -> None:
    blocked = OutputBlocked("blocked_pattern_0", "blocked")
    assert str(blocked) == "blocked:blocked_pattern_0"
    assert (blocked.detector, blocked.category) == ("blocked_pattern_0", "blocked")


KEY = "sk-proj-" + "A1b2C3d4" * 40


def test_a_key_longer_than_the_hold_back_leaves_as_one_placeholder_after_long_prose() -> None:
    """A key too long to hold back whole is released in parts, each recognised by looking back
    at where it began: after prose longer than that look-back too."""
    prose = "This is a long and chatty answer. " * 12  # 408 characters
    text = prose + KEY + " Mail jane@example.com or ann@example.org, then wait for the end."
    tokens = [text[i:i + 4] for i in range(0, len(text), 4)]
    tokens[-1:] = [tokens[-1], " And zoe@example.net."]
    detectors = [BUILTIN["api_key"], BUILTIN["email"]]  # a look-back of 512
    stage = OutputStage(OutputGuard(Scanner(detectors), GuardPolicy(), max_chars=400,
                                    max_hold_s=0.1))
    out = play(stage, tokens, [0.03] * len(tokens))
    assert "".join(out) == (prose + "[redacted:api_key] Mail [redacted:email] or "
                            "[redacted:email], then wait for the end. And [redacted:email].")
    assert stage.redactions == {"api_key": 1, "email": 3}
    assert "A1b2" not in "".join(out)


@pytest.mark.parametrize(("held", "hold_back", "cut"), [
    ("Sure, I will ignore all", 64, 0),  # shorter than the hold back: all of it waits
    ("one two three four five", 10, 8),  # back to the start of the word at 10 from the end
    ("一二三四五六七八九十" * 5, 10, 40),  # no spaces, no words: cut inside the run
    ("abc\u200bdef ghi jkl", 7, 8),  # format characters are not counted
    ("say it now" + "\u200b" * 5, 6, 4),
    ("ignore all" + "\u200b" * 6 + " previous", 12, 7),
    (" ignore previous", 10, 1),  # the last space before the phrase may be the first
    ("x" * 40, 8, 0),  # a run of 32 may be one word: kept whole
    ("x" * 41, 8, 33),  # a longer one is no word
])
def test_the_phrase_cut(held: str, hold_back: int, cut: int) -> None:
    assert phrase_cut(held, hold_back) == cut


def test_a_value_after_the_rest_of_a_long_key_is_counted_in_the_same_release() -> None:
    stage = OutputStage(OutputGuard(Scanner([BUILTIN["api_key"], BUILTIN["email"]]),
                                    GuardPolicy(), max_chars=1000, max_hold_s=0.1,
                                    whole_sentences=True))
    assert stage.feed("Key: " + KEY[:200], 0.0) == ""
    assert stage.release_due(0.1) == "Key: [redacted:api_key]"  # the rest is still held
    assert stage.feed(KEY[200:] + " mail jane@example.com now. ", 0.15) == (
        " mail [redacted:email] now.")
    assert stage.redactions == {"api_key": 1, "email": 1}


class Unhinted:
    """A built-in detector that does not say what its matches contain: a stage with one runs
    every detector on every release."""

    def __init__(self, detector: Detector) -> None:
        self.name, self.category, self.reach = detector.name, detector.category, detector.reach
        self.find = detector.find


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from([*VALUES.values(), *(v for _, v in DISGUISED),
                                       " ", ". ", "\n", "Reach us at ", " or ", "cafe",
                                       "x" * 70, "sk-", "@", "eyJ", "-----BEGIN ", "4111 ",
                                       "1" * 30, "请联系"]), max_size=12),
       cuts=st.lists(st.integers(0, 1200), max_size=60),
       sentences=st.booleans())
def test_running_only_the_detectors_a_hint_calls_for_finds_what_running_all_does(
        parts: list[str], cuts: list[int], sentences: bool) -> None:
    tokens = split("".join(parts), cuts)
    policy = GuardPolicy()
    stages = [OutputStage(OutputGuard(Scanner(detectors), policy, max_chars=400,
                                      max_hold_s=0.1, whole_sentences=sentences))
              for detectors in (list(BUILTIN.values()),
                                [Unhinted(detector) for detector in BUILTIN.values()])]
    hinted, everything = (play(stage, tokens, [0.03] * len(tokens)) for stage in stages)
    assert hinted == everything
    assert stages[0].redactions == stages[1].redactions
