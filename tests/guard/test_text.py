"""The characters values are written with: separators, and the invisible ones taken out."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from guard.text import DASHES, FORMAT_CHARS, SPACES, strip_format, without_format


def of_category(category: str) -> set[str]:
    return {char for char in map(chr, range(sys.maxunicode + 1))
            if unicodedata.category(char) == category}


def test_format_characters_are_unicode_category_cf() -> None:
    """Written out for Unicode 15.1: every Cf character this Python knows is in the class, and
    the class holds nothing else that this Python has assigned."""
    in_class = re.compile(f"[{FORMAT_CHARS}]")
    cf = of_category("Cf")
    assert all(in_class.fullmatch(char) for char in cf)
    ranges = re.findall(r"(.)(?:-(.))?", FORMAT_CHARS)
    listed = {chr(code) for first, last in ranges
              for code in range(ord(first), ord(last or first) + 1)}
    assert {unicodedata.category(char) for char in listed - cf} <= {"Cn"}


def test_spaces_are_every_space_separator_and_dashes_are_dashes() -> None:
    assert set(SPACES) == of_category("Zs")
    assert all(unicodedata.category(dash) == "Pd" or dash == "\u2212" for dash in DASHES)


@pytest.mark.parametrize("text", ["plain ASCII", "prose — with \u2019quotes\u2019 and 中文", ""])
def test_a_text_without_format_characters_is_its_own_view(text: str) -> None:
    assert without_format(text) is None
    assert strip_format(text) is text


def test_the_view_maps_back_to_the_text_as_written() -> None:
    text = "\u200bab\u200c\u200dcd\U000e0041"
    view = without_format(text)
    assert view is not None and view.text == "abcd" and strip_format(text) == "abcd"
    assert [view.original(position) for position in range(5)] == [1, 2, 5, 6, 8]
    # a span runs from its first visible character to its last, the invisible ones between
    assert view.original_span(0, 4) == (1, 7)
    assert view.original_span(1, 3) == (2, 6)
    # an original position maps to the visible character at or after it
    assert [view.position(original) for original in range(9)] == [0, 0, 1, 2, 2, 2, 3, 4, 4]


def test_the_search_for_format_characters_may_start_late() -> None:
    """A streaming caller's context is already stripped: only the text after it is searched."""
    assert without_format("ab\u200bcd", start=3) is None
    view = without_format("ab\u200bcd\u200bef", start=3)
    assert view is not None and view.text == "ab\u200bcdef"
    assert view.original_span(0, 7) == (0, 8)
