"""Semantic near-duplicates: the cosine similarity of embeddings, in one matrix."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.vectors import VectorIndex

# Unit vectors at 0, 20, 40, 60, 90 and 180 degrees from the query (1, 0).
DEGREES = {"same": 0, "close": 20, "nearish": 40, "far": 60, "unrelated": 90, "opposite": 180}
QUERY = [1.0, 0.0]


def at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def fan() -> VectorIndex:
    index = VectorIndex()
    for key, degrees in DEGREES.items():
        index.add(key, at(degrees))
    return index


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def test_a_vector_in_the_same_direction_matches_at_one() -> None:
    index = VectorIndex()
    index.add("q", [1.0, 2.0, 3.0])
    [(key, score)] = index.best([2.0, 4.0, 6.0], 0.99)
    assert key == "q"
    assert score == pytest.approx(1.0, abs=1e-6)
    assert score <= 1.0  # float32 rounding never shows past 1


def test_the_threshold_and_the_limit_are_honoured_best_first() -> None:
    index = fan()
    found = index.best(QUERY, 0.6, limit=10)
    assert [key for key, _ in found] == ["same", "close", "nearish"]
    assert [score for _, score in found] == pytest.approx(
        [1.0, math.cos(math.radians(20)), math.cos(math.radians(40))], abs=1e-6)
    assert index.best(QUERY, 0.6, limit=2) == found[:2]
    assert index.best(QUERY, -1.0) == found[:3]  # 3 by default
    assert index.best(QUERY, 0.6, limit=0) == []
    assert [key for key, _ in index.best(QUERY, 0.95)] == ["same"]
    assert [key for key, _ in index.best(QUERY, -0.5, limit=10)][-1] == "unrelated"
    assert len(index.best(QUERY, -1.0, limit=10)) == len(DEGREES)


def test_the_first_vector_fixes_the_dimension() -> None:
    index = VectorIndex()
    index.add("three", [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="3 numbers, not 4"):
        index.add("four", [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="3 numbers, not 2"):
        index.best([1.0, 0.0], 0.5)
    assert "four" not in index
    assert len(index) == 1
    index.remove("three")
    with pytest.raises(ValueError, match="3 numbers"):  # for the life of the index
        index.add("four", [1.0, 0.0, 0.0, 0.0])


def test_a_refused_first_vector_fixes_nothing() -> None:
    index = VectorIndex()
    with pytest.raises(ValueError, match="no direction"):
        index.add("zero", [0.0, 0.0, 0.0])
    index.add("two", [0.0, 1.0])
    assert index.best([0.0, 3.0], 0.9) == [("two", 1.0)]


@pytest.mark.parametrize("vector", [[0.0, 0.0], [math.nan, 1.0], [math.inf, 1.0]])
def test_a_vector_without_a_direction_is_refused(vector: list[float]) -> None:
    index = fan()
    with pytest.raises(ValueError, match="no direction"):
        index.add("bad", vector)
    with pytest.raises(ValueError, match="no direction"):
        index.best(vector, 0.5)
    assert "bad" not in index


@pytest.mark.parametrize("vector", [[], [[1.0, 0.0]]])
def test_only_a_flat_list_of_numbers_is_an_embedding(vector: list[float]) -> None:
    with pytest.raises(ValueError, match="non-empty list of numbers"):
        VectorIndex().add("bad", vector)


def test_a_key_added_again_is_found_by_its_new_vector_only() -> None:
    index = VectorIndex()
    index.add("k", [1.0, 0.0])
    index.add("k", [0.0, 1.0])
    assert len(index) == 1
    assert index.best([1.0, 0.0], 0.5) == []
    assert index.best([0.0, 1.0], 0.5) == [("k", 1.0)]


def test_a_removed_key_is_not_found_and_the_others_still_are() -> None:
    index = fan()
    index.remove("same")  # the first row: the last one moves into its place
    index.remove("never added")
    assert "same" not in index
    assert len(index) == len(DEGREES) - 1
    for key, degrees in DEGREES.items():
        if key != "same":
            assert index.best(at(degrees), 0.9999)[0][0] == key
    assert [key for key, _ in index.best(QUERY, 0.6)] == ["close", "nearish"]
    for key in DEGREES:
        index.remove(key)
    assert len(index) == 0
    assert index.best(QUERY, -1.0) == []


def test_an_empty_index_finds_nothing() -> None:
    assert VectorIndex().best([1.0, 2.0], 0.0) == []


def test_the_index_grows_past_its_first_rows() -> None:
    index = VectorIndex()
    keys = [f"k{i}" for i in range(300)]
    for i, key in enumerate(keys):
        index.add(key, [0.0] * i + [1.0] + [0.0] * (299 - i))
    assert len(index) == 300
    for i, key in enumerate(keys):
        assert index.best([0.0] * i + [1.0] + [0.0] * (299 - i), 0.5) == [(key, 1.0)]


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        fan().best(QUERY, 0.5, limit=-1)


components = st.integers(-3, 3).map(float)
vectors = st.lists(components, min_size=3, max_size=3).filter(any)
operations = st.lists(st.tuples(st.booleans(), st.sampled_from("abcdefgh"), vectors),
                      max_size=40)
NEAR = 1e-5  # float32 rows: a cosine this close to the threshold may fall either side


@given(operations, vectors, st.floats(-1.0, 1.0), st.integers(0, 9))
def test_the_index_agrees_with_comparing_against_every_key(
        steps: list[tuple[bool, str, list[float]]], query: list[float], threshold: float,
        limit: int) -> None:
    index = VectorIndex()
    reference: dict[str, list[float]] = {}
    for adding, key, vector in steps:
        if adding:
            index.add(key, vector)
            reference[key] = vector
        else:
            index.remove(key)
            reference.pop(key, None)
    assert len(index) == len(reference)
    assert all(key in index for key in reference)
    assert not any(key in index for key in set("abcdefgh") - set(reference))
    scores = {key: cosine(query, vector) for key, vector in reference.items()}
    surely_in = [key for key, score in scores.items() if score >= threshold + NEAR]
    maybe_in = {key for key, score in scores.items() if score >= threshold - NEAR}

    found = index.best(query, threshold, limit)

    assert min(limit, len(surely_in)) <= len(found) <= limit
    assert {key for key, _ in found} <= maybe_in
    assert [score for _, score in found] == pytest.approx([scores[key] for key, _ in found],
                                                          abs=NEAR)
    assert found == sorted(found, key=lambda hit: (-hit[1], hit[0]))
    if found:  # none left out beats the worst one kept
        left_out = set(scores) - {key for key, _ in found}
        assert all(scores[key] <= found[-1][1] + NEAR for key in left_out)
