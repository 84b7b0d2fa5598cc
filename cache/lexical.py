"""Lexical near-duplicates: MinHash signatures of word shingles, found through LSH bands.

The matching of last resort, used when no embedding model is configured or it fails. Signatures
are the same in every process and on every machine (replicas share them through Redis), so they
are built from fixed hashes only, never from Python's per-process `hash()`.

Cost of `signature()` for a 20-word question (37 shingles), median on the 2-core Xeon VM this
was written on (CPython 3.11): 65 µs when all its shingles have been seen before, 195 µs when only
its words have, 315 µs when none has. In CPython the 64 minima over 37 shingles alone take
55 µs and the 37 hashes 25 µs, which leaves no room for 2,368 permuted values under 100 µs cold.
The memo of each shingle's 64 permuted values (`_MEMO_SHINGLES` of them, under 3 MiB when full)
makes the warm case the common one: the questions to one gateway reuse their words and phrases.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from operator import eq

NUM_PERM = 64
PRIME = (1 << 61) - 1
# 16 bands of 4 rows: see LexicalIndex.
BANDS = 16
ROWS = NUM_PERM // BANDS

_WORD = re.compile(r"\w+")
# 2.8 KiB each: room for the words and phrases that a gateway's questions keep reusing.
_MEMO_SHINGLES = 1024


def shingles(text: str) -> frozenset[str]:
    """The casefolded words of `text` and its pairs of adjacent words.

    Words alone would make "dog bites man" the same question as "man bites dog"; pairs alone
    leave a 3-word question with 2 shingles, which one changed word wipes out. Together a short
    FAQ question keeps enough shingles to score partial overlap (3 words give 5), and word order
    counts a little. Character shingles would forgive typos but multiply the shingle count, and
    the signature's cost grows with it. A pair is two words and a space, so it never equals a
    word (`\\w` matches no space).
    """
    words = _WORD.findall(text.casefold())
    return frozenset([*words, *map(" ".join, pairwise(words))])


def _parameters(index: int) -> tuple[int, int]:
    """The fixed a and b of permutation `index`: from a keyed hash, so every machine agrees."""
    digest = hashlib.blake2b(index.to_bytes(2, "big"), digest_size=16,
                             person=b"lexical-minhash").digest()
    # a = 0 would send every shingle to b, and a permutation needs a invertible modulo p.
    a = 1 + int.from_bytes(digest[:8], "big") % (PRIME - 1)
    return a, int.from_bytes(digest[8:], "big") % PRIME


# The 64 permutations run at once on one integer of 64 lanes of 128 bits (lane i: a_i*x + b_i),
# a few big-integer operations instead of 64 rounds of interpreted arithmetic.
_LANE = 128
_LANE_BYTES = NUM_PERM * _LANE // 8
_ONES = sum(1 << (_LANE * i) for i in range(NUM_PERM))
_LOW = PRIME * _ONES  # the low 61 bits of every lane
_A = sum(_parameters(i)[0] << (_LANE * i) for i in range(NUM_PERM))
_B = sum(_parameters(i)[1] << (_LANE * i) for i in range(NUM_PERM))


def _permute(x: int) -> tuple[int, ...]:
    """(a_i * x + b_i) mod p for the 64 permutations, each exactly so."""
    # With x < p every lane stays below p**2 < 2**122: no lane carries into the next.
    v = _A * (x % PRIME) + _B
    # 2**61 = 1 (mod p), so a lane's bits above 61 add to its low bits: a sum below 2p.
    s = (v & _LOW) + ((v >> 61) & _LOW)
    # A lane at p or above gets 1 and loses bit 61, which is subtracting p.
    s = (s + (((s + _ONES) >> 61) & _ONES)) & _LOW
    words = array("Q", s.to_bytes(_LANE_BYTES, "little"))
    if sys.byteorder == "big":  # a signature must not depend on the machine
        words.byteswap()
    return tuple(words[::2])  # each lane's low 64-bit word; the high one is 0


@lru_cache(maxsize=_MEMO_SHINGLES)
def _slots(shingle: str) -> tuple[int, ...]:
    """One shingle's value under each permutation."""
    digest = hashlib.blake2b(shingle.encode(), digest_size=8).digest()
    return _permute(int.from_bytes(digest, "big"))


def signature(text: str) -> tuple[int, ...]:
    """The MinHash signature of `text`'s shingles: NUM_PERM minima, one per permutation.

    A text without a word ("", "?!") has no shingles and gets the empty signature (), which
    matches nothing, not even another empty one: such a question says nothing to match on.
    """
    found = shingles(text)
    if not found:
        return ()
    return tuple(map(min, zip(*map(_slots, found), strict=True)))


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """The estimated Jaccard similarity of two texts: the share of equal slots.

    A slot is equal only when both minima come from the same shingle (a permutation maps
    different hashes to different values), so texts without a shared shingle score exactly 0,
    as does the empty signature of a text without words.
    """
    if not a or not b:
        return 0.0
    if len(a) != len(b):
        raise ValueError(f"signatures of {len(a)} and {len(b)} slots are not comparable")
    equal: int = sum(map(eq, a, b))
    return equal / len(a)


def _check(sig: Sequence[int]) -> None:
    if len(sig) not in (0, NUM_PERM):
        raise ValueError(f"a signature has {NUM_PERM} slots (or none), not {len(sig)}")


def _bands(sig: Sequence[int]) -> list[int]:
    """The bucket keys of a signature: a hash of each band's number and its slots. Buckets are
    this process's own, so Python's `hash` will do; two bands hashing alike only make one
    more candidate, which is then scored."""
    if not sig:
        return []
    return [hash((band, *sig[band * ROWS:(band + 1) * ROWS])) for band in range(BANDS)]


class LexicalIndex:
    """Keys by signature, found by similarity without comparing against every key.

    Locality-sensitive hashing: the signature is cut into 16 bands of 4 slots, and only keys
    sharing a whole band with the query are scored. A pair of Jaccard similarity s shares a
    band with probability 1 - (1 - s**4)**16, an S-curve rising around s = 0.5:

        s = 0.3: 0.12    s = 0.5: 0.64    s = 0.7: 0.988    s = 0.8: 0.9998

    So pairs at 0.8 and above are almost never missed, while dissimilar keys are rarely even
    scored.
    Past the curve there is a guarantee: signatures equal in more than 48 of the 64 slots
    (estimated similarity above 0.75) always share a band, since 15 unequal slots spoil at most
    15 of the 16 bands. At a threshold above 0.75 `best` is therefore exact. More rows per band
    would sharpen the curve but raise its middle towards the thresholds in use (0.8), missing
    real matches; fewer would make most of a tenant's keys candidates.

    Kept compact, since a tenant may have 10,000 entries in every replica: a signature as 64
    machine words (576 bytes, not a tuple of 64 ints at 2.6 KB), a bucket as the key itself
    while it holds one key (most do) and a list after. About 2.5 KB a key in all.
    """

    def __init__(self) -> None:
        self._signatures: dict[str, array[int]] = {}
        self._buckets: dict[int, str | list[str]] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def __contains__(self, key: object) -> bool:
        return key in self._signatures

    def add(self, key: str, sig: tuple[int, ...]) -> None:
        """Index `key` under `sig`, replacing what it had; an empty signature is never found."""
        _check(sig)
        self.remove(key)
        self._signatures[key] = array("Q", sig)
        buckets = self._buckets
        for band in _bands(sig):
            held = buckets.get(band)
            if held is None:
                buckets[band] = key
            elif isinstance(held, str):
                if held != key:
                    buckets[band] = [held, key]
            elif key not in held:
                held.append(key)

    def remove(self, key: str) -> None:
        sig = self._signatures.pop(key, None)
        if sig is None:
            return
        buckets = self._buckets
        for band in _bands(sig):
            held = buckets.get(band)
            if held == key:  # keys come and go: empty buckets would pile up
                del buckets[band]
            elif isinstance(held, list) and key in held:
                held.remove(key)
                if len(held) == 1:
                    buckets[band] = held[0]

    def best(self, sig: tuple[int, ...], threshold: float,
             limit: int = 3) -> list[tuple[str, float]]:
        """Up to `limit` keys of estimated similarity >= `threshold`, best first (then by key).

        The threshold must lie in (0, 1]: keys sharing no band are never scored, so "any
        similarity at all" is a question the bands cannot answer.
        """
        _check(sig)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"a similarity threshold lies in (0, 1], not {threshold}")
        if limit < 0:
            raise ValueError(f"a limit is not negative, not {limit}")
        # Each unequal slot spoils at most one band, so a key at the threshold shares at least
        # this many bands with the query: keys sharing fewer are never scored. Questions that
        # share common words make large buckets; this keeps a lookup from scoring them all.
        most_unequal = NUM_PERM - math.ceil(threshold * NUM_PERM - 1e-9)
        need = max(1, BANDS - most_unequal)
        shared: dict[str, int] = {}
        for band in _bands(sig):
            held = self._buckets.get(band)
            if isinstance(held, str):
                shared[held] = shared.get(held, 0) + 1
            elif held is not None:
                for key in held:
                    shared[key] = shared.get(key, 0) + 1
        scored = [(key, score) for key, bands in shared.items() if bands >= need
                  and (score := similarity(sig, self._signatures[key])) >= threshold]
        scored.sort(key=lambda hit: (-hit[1], hit[0]))
        return scored[:limit]
