"""A reader's writes: bounded, so a reader that stops reading holds little, and never a frame
cut in two."""

from __future__ import annotations

from streaming.resumable import CHUNK_BYTES, chunks


def test_writes_are_bounded_and_never_split_a_frame() -> None:
    frames = (b"a" * 40_000, b"b" * 40_000, b"c" * 100_000, b"d" * 10)
    assert [len(chunk) for chunk in chunks(frames)] == [40_000, 40_000, 100_000, 10]
    small = tuple(b"x" * 100 for _ in range(1000))
    written = list(chunks(small))
    assert b"".join(written) == b"".join(small)
    assert max(len(chunk) for chunk in written) <= CHUNK_BYTES and len(written) == 2


def test_what_fits_goes_in_one_write() -> None:
    assert list(chunks((b"id: 0\n", b"id: 1\n"))) == [b"id: 0\nid: 1\n"]
