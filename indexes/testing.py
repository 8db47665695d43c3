"""Helpers for testing and benchmarking index kinds, built-in or third-party.

The contract suite (``tests/test_index_contract.py``) and ``bench/indexes.py`` use them: an
in-memory :class:`ArrayLookup` standing in for the engine's vector file, a reproducible
generator of clustered unit vectors, and recall against exact results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexes.base import as_ids


class ArrayLookup:
    """A :class:`~indexes.base.VectorLookup` over ids and an array (or memmap) of their vectors."""

    def __init__(self, ids: Any, vectors: Any) -> None:
        ids = as_ids(ids)
        self._order = np.argsort(ids, kind="stable")
        self._keys = ids[self._order]
        self._vectors = vectors

    def put(self, ids: Any, vectors: Any) -> None:
        """Replace the vectors of ids already held, as the engine does on an upsert."""
        rows = self._order[np.searchsorted(self._keys, as_ids(ids))]
        self._vectors[rows] = vectors

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = as_ids(ids)
        slots = np.minimum(np.searchsorted(self._keys, ids), max(len(self._keys) - 1, 0))
        if len(ids) and (len(self._keys) == 0 or (self._keys[slots] != ids).any()):
            raise KeyError("lookup: some ids have no vector")
        rows = self._order[slots]
        order = np.argsort(rows, kind="stable")  # read a memmap front to back
        out = np.empty((len(ids), self._vectors.shape[1]), np.float32)
        out[order] = self._vectors[rows[order]]
        return out


def clustered(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    start: int = 0,
    clusters: int = 1000,
    latent: int = 128,
    spread: float = 0.7,
    noise: float = 0.3,
    drift: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``start .. start+n`` of a reproducible stream of clustered unit vectors.

    Like real embeddings the points have a low intrinsic dimension: a mixture of ``clusters``
    Gaussians in a ``latent``-dimensional space, mapped to ``dim`` by a fixed random linear
    map, plus isotropic noise in all ``dim`` dimensions. The same ``seed`` gives the same
    centres and map for every ``start``, so queries are drawn as rows beyond the data. ``drift``
    moves every centre along its own fixed direction by that many latent units, for data whose
    distribution changes over time. ``out`` receives the rows (e.g. a memmap) if given.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32)
    heading = rng.standard_normal((clusters, latent)).astype(np.float32)
    heading /= np.linalg.norm(heading, axis=1, keepdims=True)
    centres += drift * heading
    mapping = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    out = np.empty((n, dim), np.float32) if out is None else out
    step = 32768
    for offset in range(0, n, step):
        rows = min(step, n - offset)
        part = np.random.default_rng([seed, start + offset])
        labels = part.integers(0, clusters, rows)
        z = centres[labels] + spread * part.standard_normal((rows, latent), dtype=np.float32)
        x = z @ mapping + noise * part.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[offset : offset + rows] = x
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true ids (``-1`` = none) that ``found`` contains."""
    hits = total = 0
    for got, want in zip(found, truth, strict=True):
        want = want[want >= 0]
        hits += len(np.intersect1d(got[got >= 0], want))
        total += len(want)
    return hits / total if total else 1.0
