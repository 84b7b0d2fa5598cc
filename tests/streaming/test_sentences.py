# The full-width punctuation of Chinese and Japanese prose is test data here.
# ruff: noqa: RUF001
import pytest

from streaming.sentences import SentenceBuffer


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
