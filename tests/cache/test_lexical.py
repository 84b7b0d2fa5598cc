"""Lexical near-duplicates: MinHash signatures of word shingles, and their banded index."""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.lexical import (
    BANDS,
    NUM_PERM,
    PRIME,
    ROWS,
    LexicalIndex,
    _permute,
    shingles,
    signature,
    similarity,
)

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "how can i change the billing address on my account"
ONE_WORD_CHANGED = "how can i update the billing address on my account"
UNRELATED = "which payment cards do you accept"
SAME_START = "how can i delete my account"
VOCABULARY = ["how", "can", "i", "change", "reset", "my", "password", "the", "billing", "address"]
texts = st.lists(st.sampled_from(VOCABULARY), max_size=12).map(" ".join)


def jaccard(a: str, b: str) -> float:
    first, second = shingles(a), shingles(b)
    return len(first & second) / len(first | second)


def documented_permutations() -> list[tuple[int, int]]:
    """a and b as the module's docs derive them, written out again to hold the code to them."""
    found = []
    for index in range(NUM_PERM):
        digest = hashlib.blake2b(index.to_bytes(2, "big"), digest_size=16,
                                 person=b"lexical-minhash").digest()
        found.append((1 + int.from_bytes(digest[:8], "big") % (PRIME - 1),
                      int.from_bytes(digest[8:], "big") % PRIME))
    return found


PERMUTATIONS = documented_permutations()


def indexed(*questions: str) -> LexicalIndex:
    index = LexicalIndex()
    for question in questions:
        index.add(question, signature(question))
    return index


def test_shingles_are_the_words_and_each_pair_of_neighbours() -> None:
    assert shingles("How do I reset?") == {"how", "do", "i", "reset", "how do", "do i", "i reset"}


def test_case_and_punctuation_do_not_change_a_question() -> None:
    index = indexed("How do I reset my password?")
    rephrased = signature("how do i RESET my password!!")
    assert similarity(signature("How do I reset my password?"), rephrased) == 1.0
    assert index.best(rephrased, 0.8) == [("How do I reset my password?", 1.0)]


def test_word_order_counts_a_little() -> None:
    score = similarity(signature("dog bites man"), signature("man bites dog"))
    assert 0.0 < score < 0.75


def test_a_question_differing_in_one_word_of_ten_still_matches() -> None:
    assert jaccard(QUESTION, ONE_WORD_CHANGED) == pytest.approx(16 / 22)  # 9/11 words, 7/11 pairs
    score = similarity(signature(QUESTION), signature(ONE_WORD_CHANGED))
    assert score == pytest.approx(16 / 22, abs=0.15)
    assert indexed(QUESTION).best(signature(ONE_WORD_CHANGED), 0.6) == [(QUESTION, score)]


def test_an_unrelated_question_does_not_match() -> None:
    index = indexed(QUESTION)
    assert similarity(signature(QUESTION), signature(UNRELATED)) == 0.0  # no shared shingle
    assert index.best(signature(UNRELATED), 0.5) == []
    # Sharing "how can i" and "my account" is not being the same question.
    assert index.best(signature(SAME_START), 0.6) == []


def test_similarity_estimates_the_jaccard_similarity_without_bias() -> None:
    draw = random.Random(7)
    words = [f"w{i}" for i in range(40)]
    errors = []
    for _ in range(300):
        first = draw.choices(words, k=draw.randint(3, 25))
        second = [word if draw.random() > draw.random() else draw.choice(words) for word in first]
        a, b = " ".join(first), " ".join(second)
        errors.append(similarity(signature(a), signature(b)) - jaccard(a, b))
    # 64 independent permutations err by about sqrt(J(1-J)/64), 0.04 on average here.
    assert statistics.mean(map(abs, errors)) < 0.06
    assert abs(statistics.mean(errors)) < 0.015


@given(texts.filter(bool))
def test_each_slot_is_the_least_value_of_a_permutation_of_the_shingles(text: str) -> None:
    hashes = [int.from_bytes(hashlib.blake2b(shingle.encode(), digest_size=8).digest(), "big")
              for shingle in shingles(text)]
    assert signature(text) == tuple(min((a * x + b) % PRIME for x in hashes)
                                    for a, b in PERMUTATIONS)


@given(st.one_of(st.sampled_from([0, 1, PRIME - 1, PRIME, PRIME + 1, 2 * PRIME, 2**64 - 1]),
                 st.integers(0, 2**64 - 1)))
def test_the_permutations_are_exact_at_the_edges_of_the_modulus(x: int) -> None:
    assert _permute(x) == tuple((a * x + b) % PRIME for a, b in PERMUTATIONS)


def test_signatures_are_the_same_in_every_interpreter() -> None:
    """Replicas share signatures through Redis: no per-process string hashing may leak in."""
    code = ("import json, sys; from cache.lexical import signature; "
            "print(json.dumps([signature(line) for line in sys.stdin.read().splitlines()]))")
    questions = [QUESTION, UNRELATED, "Où est ma facture ?"]
    outputs = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], input="\n".join(questions),
                              capture_output=True, text=True, check=True, cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append([tuple(found) for found in json.loads(done.stdout)])
    assert outputs[0] == outputs[1] == [signature(question) for question in questions]


def test_signatures_stay_the_same_from_one_release_to_the_next() -> None:
    """During a rolling deploy two releases share Redis: a new release must read old entries."""
    assert signature("How do I reset my password?")[:4] == (
        39158575252472960, 115878571123872825, 67302759155297140, 217225712266749303)


def test_a_text_without_words_matches_nothing() -> None:
    assert signature("") == signature("?! ...") == ()
    assert similarity((), ()) == similarity((), signature("anything")) == 0.0
    index = LexicalIndex()
    index.add("blank", ())
    assert "blank" in index
    assert len(index) == 1
    assert index.best((), 0.5) == []
    assert index.best(signature("anything"), 0.01) == []


def test_the_threshold_and_the_limit_are_honoured_best_first() -> None:
    closest = "how can i change the billing address on my account please"
    index = indexed(QUESTION, closest, ONE_WORD_CHANGED, UNRELATED, SAME_START)
    query = signature(QUESTION)
    found = index.best(query, 0.6, limit=10)
    assert [key for key, _ in found] == [QUESTION, closest, ONE_WORD_CHANGED]
    assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    assert found[0] == (QUESTION, 1.0)
    assert index.best(query, 0.6, limit=2) == found[:2]
    assert index.best(query, 0.6) == found[:3]  # 3 by default
    assert index.best(query, 0.6, limit=0) == []
    assert index.best(query, 1.0) == [(QUESTION, 1.0)]
    assert index.best(query, found[1][1], limit=10) == found[:2]  # a score at the threshold is in


def test_a_key_added_again_is_found_by_its_new_text_only() -> None:
    index = LexicalIndex()
    index.add("k", signature(QUESTION))
    index.add("k", signature(UNRELATED))
    assert len(index) == 1
    assert index.best(signature(QUESTION), 0.5) == []
    assert index.best(signature(UNRELATED), 0.5) == [("k", 1.0)]


def test_a_removed_key_is_not_found_and_the_others_still_are() -> None:
    index = indexed(QUESTION, ONE_WORD_CHANGED, UNRELATED)
    index.remove(QUESTION)
    index.remove("never added")
    assert QUESTION not in index
    assert len(index) == 2
    assert [key for key, _ in index.best(signature(QUESTION), 0.6)] == [ONE_WORD_CHANGED]
    assert index.best(signature(UNRELATED), 0.9) == [(UNRELATED, 1.0)]
    index.remove(ONE_WORD_CHANGED)
    index.remove(UNRELATED)
    assert len(index) == 0
    assert index._buckets == {}  # nothing left behind by keys gone


@pytest.mark.parametrize("intact", range(BANDS))
def test_signatures_equal_in_more_than_48_slots_are_always_found(intact: int) -> None:
    """The worst case: one slot differs in each band but one, whichever band that is."""
    draw = random.Random(intact)
    stored = tuple(draw.randrange(PRIME) for _ in range(NUM_PERM))
    query = list(stored)
    for band in set(range(BANDS)) - {intact}:
        slot = band * ROWS + draw.randrange(ROWS)
        query[slot] = PRIME + slot  # a value no permutation yields
    index = LexicalIndex()
    index.add("stored", stored)
    assert index.best(tuple(query), 49 / NUM_PERM) == [("stored", 49 / NUM_PERM)]


operations = st.lists(st.tuples(st.booleans(), st.sampled_from("abcdef"), texts), max_size=25)


@given(operations, texts, st.sampled_from([0.3, 0.5, 0.7, 0.77, 0.9, 1.0]), st.integers(0, 6))
def test_the_index_agrees_with_comparing_against_every_key(
        steps: list[tuple[bool, str, str]], query: str, threshold: float, limit: int) -> None:
    index = LexicalIndex()
    reference: dict[str, tuple[int, ...]] = {}
    for adding, key, text in steps:
        if adding:
            index.add(key, signature(text))
            reference[key] = signature(text)
        else:
            index.remove(key)
            reference.pop(key, None)
    assert len(index) == len(reference)
    assert all(key in index for key in reference)
    assert not any(key in index for key in set("abcdef") - set(reference))
    sig = signature(query)
    every = sorted(((key, similarity(sig, stored)) for key, stored in reference.items()
                    if similarity(sig, stored) >= threshold), key=lambda hit: (-hit[1], hit[0]))
    found = index.best(sig, threshold, limit)
    if threshold > 48 / NUM_PERM:
        assert found == every[:limit]
    else:  # the bands may miss a weak match, never invent one
        assert set(found) <= set(every)
        assert found == sorted(found, key=lambda hit: (-hit[1], hit[0]))
        assert len(found) <= limit


def test_signatures_of_another_length_are_refused() -> None:
    index = LexicalIndex()
    with pytest.raises(ValueError, match="64 slots"):
        index.add("short", (1, 2, 3))
    with pytest.raises(ValueError, match="64 slots"):
        index.best((1, 2, 3), 0.5)
    with pytest.raises(ValueError, match="not comparable"):
        similarity((1, 2, 3), signature(QUESTION))
    assert len(index) == 0


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5])
def test_a_threshold_outside_the_range_of_similarities_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        indexed(QUESTION).best(signature(QUESTION), threshold)


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        indexed(QUESTION).best(signature(QUESTION), 0.5, limit=-1)
