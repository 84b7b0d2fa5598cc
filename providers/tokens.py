"""A rough, dependency-free token splitter for the demo model and input size estimates.

It approximates what BPE tokenizers do to English text (short words are one token, long ones
split, punctuation stands alone) closely enough for pacing, usage counts and budget estimates.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*[^\W\d_]{1,8}|\s*\d{1,3}|\s*[^\w\s]|\s*_+|\s+")


def split_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))
