"""The characters a value may be written with beyond its digits and letters.

Typesetting puts non-breaking or narrow spaces and typographic dashes between digit groups,
and invisible format characters (zero-width space, word joiner, soft hyphen, BOM, bidi
controls: Unicode category Cf) can sit anywhere without changing what a reader sees. The
detectors accept the first as group separators; the second are taken out of the text before
it is scanned (`without_format`), and the positions found are mapped back, so a redaction
covers the invisible characters inside a value too.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right

# Every Unicode space separator (category Zs).
SPACES = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u202f\u205f\u3000"
# Hyphen-minus, the typographic hyphens and dashes, the minus sign, and their small and
# full-width forms: what a word processor or a model may print between digit groups.
DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"

# Latin letters beyond ASCII, as character-class ranges: Latin-1 (less the multiplication and
# division signs), Extended-A and -B, Extended Additional. Languages written in them space
# their words, so a run of them is short.
LATIN_LETTERS = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"

# Unicode category Cf (as of Unicode 15.1), written out: deriving it from `unicodedata` would
# walk a million code points at import. tests/guard/test_text.py holds it to this Python's
# Unicode database.
_FORMAT_BMP = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
)
FORMAT_CHARS = (
    f"{_FORMAT_BMP}\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_FORMAT = re.compile(f"[{FORMAT_CHARS}]")
# The same, with one range for the few outside the BMP: each range in a class costs a test
# per character, and this search runs on every release that is not pure ASCII.
_MAYBE_FORMAT = re.compile(f"[{_FORMAT_BMP}\U000110bd-\U000e007f]")


def _first_format(text: str, start: int) -> int:
    """Where the first format character at or after `start` is, or -1."""
    if text.isascii():
        return -1
    maybe = _MAYBE_FORMAT.search(text, start)
    found = maybe and _FORMAT.search(text, maybe.start())
    return found.start() if found else -1


def strip_format(text: str) -> str:
    """`text` without its invisible format characters."""
    return text if _first_format(text, 0) < 0 else _FORMAT.sub("", text)


class FormatFree:
    """A text without its format characters, and the way back to positions in the original.

    Built only for a text that holds one (see `without_format`); its maps are binary searches
    over the removed characters, not a table per character, so a long text with one
    zero-width joiner stays cheap.
    """

    __slots__ = ("_removed", "_removed_before", "text")

    def __init__(self, original: str, start: int) -> None:
        self._removed = [match.start() for match in _FORMAT.finditer(original, start)]
        # Where each removed character would sit in `text`: a visible position is shifted
        # back by one for each of these at or before it.
        self._removed_before = [at - count for count, at in enumerate(self._removed)]
        self.text = original[:start] + _FORMAT.sub("", original[start:])

    def position(self, original: int) -> int:
        """The position in `text` of what stands at `original` (or follows it, if that is a
        format character)."""
        return original - bisect_left(self._removed, original)

    def original(self, position: int) -> int:
        """Where the character at `position` of `text` stands in the original (the original's
        length for the end of `text`)."""
        return position + bisect_right(self._removed_before, position)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of `text[start:end]` (non-empty): from its first visible
        character to its last, the format characters between them included."""
        return self.original(start), self.original(end - 1) + 1


def without_format(text: str, start: int = 0) -> FormatFree | None:
    """The view of `text` a detector should scan, or None when `text` has no format character
    and is its own view. `text[:start]` is taken to hold none (a streaming caller's context,
    already stripped), so only the rest is searched: that search is the whole cost on the
    usual text, and none at all on pure ASCII."""
    first = _first_format(text, start)
    return None if first < 0 else FormatFree(text, first)
