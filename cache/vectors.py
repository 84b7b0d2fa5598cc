"""Semantic near-duplicates: the cosine similarity of question embeddings, in memory.

The one module of the cache that needs numpy, imported only when an embedding model is
configured. Vectors are stored L2-normalized as float32 rows of one matrix, so a lookup is a
single matrix-vector product over the rows in use.

`best()` over 10,000 rows, median on the 2-core Xeon VM this was written on (numpy 2.4, its
bundled OpenBLAS), with a threshold few rows pass:

    256 dimensions:    385 µs on one BLAS thread,  215 µs on two
    1,536 dimensions: 2190 µs on one BLAS thread, 1230 µs on two

At 1,536 dimensions the rows in use are 59 MiB, read once per lookup: memory bandwidth sets
the pace. The two-thread figures hold only on idle cores: with the other core busy, a lookup
now and then waited 8 ms for the second BLAS thread (OPENBLAS_NUM_THREADS=1 avoids that).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

# Before numpy loads its BLAS: one lookup's product is a fraction of a millisecond, and BLAS
# threads beside the event loop (one per core, in every worker) made some lookups wait ~8 ms
# while the other core was busy. An operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

# Most scopes (a conversation's earlier turns) hold a handful of entries: start small.
_FIRST_ROWS = 2


class VectorIndex:
    """Keys by embedding, best matches by cosine similarity.

    The dimension is fixed by the first vector added, for the life of the index: a vector of
    another length comes from another model, and its cosines with these would mean nothing.
    """

    def __init__(self) -> None:
        self._dimension: int | None = None
        self._matrix: npt.NDArray[np.float32] = np.empty((0, 0), dtype=np.float32)
        self._keys: list[str] = []  # by row
        self._rows: dict[str, int] = {}  # by key

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def add(self, key: str, vector: Sequence[float]) -> None:
        """Index `key` under `vector`'s direction, replacing what it had.

        Raises ValueError for a vector of another length than the index's, or one without a
        direction (all zeros, or not finite), and then changes nothing.
        """
        unit = self._unit(vector)
        if self._dimension is None:
            self._dimension = unit.size
            self._matrix = np.empty((_FIRST_ROWS, unit.size), dtype=np.float32)
        row = self._rows.get(key)
        if row is None:
            row = len(self._keys)
            if row == len(self._matrix):
                self._grow()
            self._keys.append(key)
            self._rows[key] = row
        self._matrix[row] = unit

    def remove(self, key: str) -> None:
        """Forget `key` (unknown: nothing to do) by moving the last row into its place."""
        row = self._rows.pop(key, None)
        if row is None:
            return
        moved = self._keys.pop()
        if moved != key:
            last = len(self._keys)
            self._matrix[row] = self._matrix[last]
            self._keys[row] = moved
            self._rows[moved] = row

    def best(self, vector: Sequence[float], threshold: float,
             limit: int = 3) -> list[tuple[str, float]]:
        """Up to `limit` keys of cosine >= `threshold` with `vector`, best first (then by key).

        Raises ValueError for a vector of another length than the index's, or without a
        direction.
        """
        if limit < 0:
            raise ValueError(f"a limit is not negative, not {limit}")
        query = self._unit(vector)
        rows = len(self._keys)
        if not rows or not limit:
            return []
        scores = self._matrix[:rows] @ query
        hits = np.flatnonzero(scores >= threshold)
        if hits.size > limit:  # only the best `limit` need sorting
            hits = hits[np.argpartition(scores[hits], hits.size - limit)[hits.size - limit:]]
        # float32 rounding can take the cosine of a vector with itself a hair past 1.
        found = [(self._keys[i], max(-1.0, min(1.0, float(scores[i])))) for i in hits.tolist()]
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found

    def _unit(self, vector: Sequence[float]) -> npt.NDArray[np.float32]:
        """`vector` scaled to length 1, once it is checked to fit this index."""
        array = np.asarray(vector, dtype=np.float64)
        if array.ndim != 1 or not array.size:
            raise ValueError(f"an embedding is a non-empty list of numbers, not {array.shape}")
        if self._dimension is not None and array.size != self._dimension:
            raise ValueError(f"this index holds vectors of {self._dimension} numbers, "
                             f"not {array.size}")
        norm = float(np.linalg.norm(array))
        if not norm or not math.isfinite(norm):
            raise ValueError("a vector of zeros, or with a number not finite, has no direction")
        return (array / norm).astype(np.float32)

    def _grow(self) -> None:
        # Doubling keeps the copying per add constant on average.
        bigger = np.empty((2 * len(self._matrix), self._matrix.shape[1]), dtype=np.float32)
        bigger[:len(self._keys)] = self._matrix[:len(self._keys)]
        self._matrix = bigger
