# The full-width punctuation of Chinese and Japanese prose is test data here.
# ruff: noqa: RUF001
import pytest

from guard.scan import settled_cut
from streaming.sentences import SentenceBuffer, WordBuffer, ends_sentence


@pytest.mark.parametrize(("pushes", "released"), [
    # (text, now) pushes -> what each push releases
    ([("Hello", 0.0), (" world.", 0.1)], ["", "Hello world."]),
    ([("One. Two", 0.0)], ["One."]),
    ([("Wait!", 0.0), (" Really?", 0.1), (" Yes", 0.2)], ["Wait!", " Really?", ""]),
    ([("He said \"no.\"", 0.0), (" Then", 0.1)], ["He said \"no.\"", ""]),
    ([("line one\nline", 0.0)], ["line one\n"]),
    ([("3.14 is pi", 0.0)], [""]),
    ([("x" * 20, 0.0)], ["x" * 20]),                  # max_chars reached
    ([("slow", 0.0), (" and", 0.5), (" steady", 0.7)], ["", "", "slow and steady"]),
    # Chinese and Japanese: no space after a full stop, closing brackets stay with it
    ([("你好。我是", 0.0)], ["你好。"]),
    ([("真的吗？」他问", 0.0), ("。", 0.1)], ["真的吗？」", "他问。"]),
    ([("はい！次", 0.0)], ["はい！"]),
    ([("第一；第二", 0.0)], [""]),  # a clause, not a sentence: as with ;
])
def test_release_points(pushes: list[tuple[str, float]], released: list[str]) -> None:
    buffer = SentenceBuffer(max_chars=20, max_hold_s=0.6)
    assert [buffer.push(text, now) for text, now in pushes] == released


def test_hold_time_counts_from_the_oldest_held_text() -> None:
    buffer = SentenceBuffer(max_chars=100, max_hold_s=0.5)
    assert buffer.push("First. sec", 0.0) == "First."
    assert buffer.deadline() == 0.0 + 0.5
    assert buffer.release_due(0.4) == ""
    assert buffer.release_due(0.5) == " sec"
    assert buffer.deadline() is None


def test_drain_returns_everything_held() -> None:
    buffer = SentenceBuffer(max_chars=100, max_hold_s=5)
    buffer.push("no end", 0.0)
    assert buffer.drain() == "no end"
    assert buffer.held == ""


def test_settle_keeps_back_what_may_still_grow_and_restarts_its_hold() -> None:
    def keep_last_word(held: str, cut: int) -> int:
        return held.rfind(" ", 0, cut) + 1 if cut == len(held) else cut

    buffer = SentenceBuffer(max_chars=100, max_hold_s=0.5, settle=keep_last_word)
    assert buffer.push("one two thr", 0.0) == ""
    assert buffer.release_due(0.5) == "one two "
    assert buffer.held == "thr"
    assert buffer.deadline() == 1.0  # a new hold, not a deadline already passed
    assert buffer.release_due(0.6) == ""
    assert buffer.push("ee. Four", 0.7) == "three."
    assert buffer.drain() == " Four"


def test_a_sentence_end_kept_back_whole_does_not_restart_the_hold() -> None:
    """A sentence ending in a number may go on ("48213." could become "48213.5"): settling
    keeps it all back, and the tokens after it propose it again and again. The hold time
    still runs from the oldest held text, so the answer does not stall until the buffer is
    full."""
    def keep_back_numbers(held: str, cut: int) -> int:
        return 0 if "48213" in held[:cut] else cut

    buffer = SentenceBuffer(max_chars=400, max_hold_s=0.1, settle=keep_back_numbers)
    assert buffer.push("Your order is 48213.", 0.0) == ""
    assert buffer.push(" Thanks", 0.03) == ""
    assert buffer.push(" for", 0.06) == ""
    assert buffer.deadline() == 0.1
    assert buffer.push(" waiting", 0.09) == ""
    assert buffer.release_due(0.1) == ""  # the whole held text is still kept back,
    assert buffer.deadline() == 0.2  # and the forced release that kept it starts a new hold


@pytest.mark.parametrize(("max_chars", "max_hold_s"), [(0, 1.0), (5, -0.1)])
def test_a_buffer_needs_room_and_a_hold_time(max_chars: int, max_hold_s: float) -> None:
    with pytest.raises(ValueError) as refused:
        SentenceBuffer(max_chars, max_hold_s)
    assert str(refused.value) == "max_chars must be >= 1 and max_hold_s >= 0"


def test_the_smallest_buffer_releases_each_character_at_once() -> None:
    buffer = SentenceBuffer(max_chars=1, max_hold_s=0)
    assert [buffer.push(char, 0.0) for char in "ab"] == ["a", "b"]


def test_the_hold_time_is_reached_to_the_microsecond() -> None:
    buffer = SentenceBuffer(max_chars=100, max_hold_s=0.5)
    assert buffer.push("slow", 0.0) == ""
    assert buffer.push("", 0.25) == ""  # an empty delta releases only what is due
    assert buffer.push(" and", 0.499) == ""
    assert buffer.push(" steady", 0.5) == "slow and steady"


def test_a_forced_release_that_keeps_part_back_starts_a_new_hold_for_it() -> None:
    def keep_last_word(held: str, cut: int) -> int:
        return held.rfind(" ", 0, cut) + 1

    buffer = SentenceBuffer(max_chars=100, max_hold_s=0.5, settle=keep_last_word)
    assert buffer.push("one two thr", 0.0) == ""
    assert buffer.push("ee fo", 0.5) == "one two three "  # the hold time: forced
    assert buffer.held == "fo" and buffer.deadline() == 1.0
    assert buffer.push("", 0.9) == ""
    assert buffer.push("", 1.0) == ""  # all kept back: a new hold once more
    assert buffer.deadline() == 1.5
    assert buffer.push("ur", 1.5) == ""  # forced by a push, all kept back: the same
    assert (buffer.held, buffer.deadline()) == ("four", 2.0)


@pytest.mark.parametrize(("text", "cut", "ends"), [
    ("Done. Next", 5, True),
    ("Done. Next", 4, False),
    (". Next", 1, True),
    ("He said \"no.\" Then", 13, True),
    ("Pi is 3.14", 7, False),
    ("你好。我是", 3, True),
])
def test_whether_a_cut_ends_a_sentence(text: str, cut: int, ends: bool) -> None:
    assert ends_sentence(text, cut) is ends


@pytest.mark.parametrize(("pushes", "released"), [
    # each push -> what it releases: all but a run at the end that may still grow
    (["Hello", " world", ", and", " more"], ["", "Hello ", "world, ", "and "]),
    (["Call 555", " 0132", " now"], ["Call ", "", "555 0132 "]),
    (["mail jane", "@example", ".com", " please"], ["mail ", "", "", "jane@example.com "]),
    (["你好", "世界"], ["你好", "世界"]),  # no run: another script's words go at once
    (["x" * 200], ["x" * 72]),  # a run too long to be one value keeps back its end only
])
def test_a_word_buffer_holds_only_a_run_that_may_still_grow(pushes: list[str],
                                                            released: list[str]) -> None:
    buffer = WordBuffer(settled_cut)
    assert [buffer.push(text, 0.0) for text in pushes] == released
    assert "".join(released) + buffer.drain() == "".join(pushes)
    assert buffer.deadline() is None and buffer.release_due(60.0) == ""
