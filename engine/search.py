"""Query planning: exact scoring for selective filters, a widening index search for broad ones.

A filtered search must return k hits whenever k documents match. Post-filtering a fixed number
of candidates cannot promise that (txtai's filtered recall@10 was about 0.5), so the plan
depends on how many documents match: few enough, and they are scored exactly from the stored
vectors; many, and the index is over-fetched and widened until k matching hits are found.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.live import Served
from engine.store import Store

#: A filter matching at most this many documents is answered exactly from the stored vectors.
SELECTIVE_LIMIT = 20_000
#: Filters whose matching ids are remembered; for kinds without full vectors (ivfpq), so are
#: the matching vectors, within the byte budget.
FILTER_CACHE_SIZE = 64
FILTER_CACHE_BYTES = 256 * 2**20


class Planner:
    """Plans and runs the index side of searches; one per collection handle, shared by threads.

    It owns no index: every call gets the :class:`Served` state its search holds still, so
    concurrent searches never see two generations. The filter cache (and the set of filters
    being queried, so that threads missing it at once query the store once) is its only
    shared state.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._filter_cache: OrderedDict[tuple[str, int], _Matches] = OrderedDict()
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()
        self._running: dict[tuple[str, int], threading.Event] = {}  # filters being queried

    def candidates_many(
        self, q: np.ndarray, k: int, where: dict[str, Any] | None, served: Served
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (ids, scores); unfiltered queries share one index call."""
        with threads_for(len(q)):
            if where is None and len(q):
                scores, ids = served.index.search(q, k)
                return [(i[i >= 0], s[i >= 0]) for i, s in zip(ids, scores, strict=True)]
            return [self.candidates(row, k, where, served) for row in q]

    def candidates(
        self, q: np.ndarray, k: int, where: dict[str, Any] | None, served: Served
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the best k visible documents matching ``where``, best first."""
        index, m = served.index, served.manifest
        if where is None:
            scores, ids = index.search(q[None, :], k)
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep]
        found = self.matching(where, m.generation)
        if len(found.ids) <= SELECTIVE_LIMIT:
            if len(found.ids) == 0:
                return found.ids, np.zeros(0, dtype=np.float32)
            exact = index.search_exact(q[None, :], k, found.ids)
            if exact is None:  # the kind keeps no full vectors: read the exact file
                scores, ids = exact_top_k(self._vectors_of(found, served), found.ids, q, k)
                return ids, scores
            scores, ids = exact[0][0], exact[1][0]
            return ids[ids >= 0], scores[ids >= 0]

        def admit(cand: np.ndarray) -> np.ndarray:
            return np.isin(cand, self.store.matching_ids(where, m.generation, among=cand))

        return post_filtered(index, q, k, admit)

    def matching(self, where: dict[str, Any], generation: int) -> _Matches:
        """Ids matching a filter (at most SELECTIVE_LIMIT + 1), memoised per generation.

        Chatbots repeat the same few filters (a tenant, a language), and a committed generation
        never changes, so the answer can be reused until the next commit.
        """
        key = (json.dumps(where, sort_keys=True), generation)
        while True:
            with self._cache_lock:
                found = self._filter_cache.get(key)
                if found is not None:
                    self._filter_cache.move_to_end(key)
                    return found
                running = self._running.get(key)
                if running is None:
                    running = self._running[key] = threading.Event()
                    break
            # Another thread runs this filter's query: wait for its answer rather than run
            # the same query again. Under a stream of adds every commit is a new generation,
            # and each search thread would otherwise query the store for every filter anew.
            running.wait()
        try:  # outside the lock: other filters' searches go on meanwhile
            ids = self.store.matching_ids(where, generation, limit=SELECTIVE_LIMIT + 1)
            with self._cache_lock:
                found = self._filter_cache.setdefault(key, _Matches(ids))
                while len(self._filter_cache) > FILTER_CACHE_SIZE:
                    self._forget(next(iter(self._filter_cache)))
            return found
        finally:  # on an error too: a waiter then runs the query itself (and meets the error)
            with self._cache_lock:
                del self._running[key]
            running.set()

    def _vectors_of(self, found: _Matches, served: Served) -> np.ndarray:
        """The matching documents' exact vectors, kept with the ids while the budget allows."""
        cached = found.vectors
        if cached is not None:
            return cached
        vectors = served.vectors.get(found.ids)
        with self._cache_lock:
            if found.vectors is not None:  # another thread cached them meanwhile
                return found.vectors
            while self._cached_bytes + vectors.nbytes > FILTER_CACHE_BYTES and self._cached_bytes:
                oldest = next(k for k, v in self._filter_cache.items() if v.vectors is not None)
                self._cached_bytes -= self._filter_cache[oldest].vectors.nbytes
                self._filter_cache[oldest].vectors = None
            if vectors.nbytes <= FILTER_CACHE_BYTES and any(
                v is found for v in self._filter_cache.values()
            ):
                found.vectors = vectors
                self._cached_bytes += vectors.nbytes
        return vectors

    def _forget(self, key: tuple[str, int]) -> None:
        gone = self._filter_cache.pop(key)
        if gone.vectors is not None:
            self._cached_bytes -= gone.vectors.nbytes

    @property
    def cached_vector_bytes(self) -> int:
        """Bytes of vectors the filter cache holds (zero for kinds that score in place)."""
        return self._cached_bytes

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._filter_cache.clear()
            self._cached_bytes = 0


@dataclass
class _Matches:
    ids: np.ndarray
    vectors: np.ndarray | None = None


def post_filtered(
    index: Any, q: np.ndarray, k: int, admit: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of a broad filter: over-fetch from the index, keep what ``admit`` admits,
    and fetch four times deeper until k are admitted or the whole index was read.

    The recall measurement (engine/recall.py) runs its filtered queries through this same plan.
    """
    total = len(index)
    fetch = min(k * 8, total)
    while True:
        scores, ids = index.search(q[None, :], fetch)
        cand, cand_scores = ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]
        keep = admit(cand)
        if keep.sum() >= k or fetch >= total:
            return cand[keep][:k], cand_scores[keep][:k]
        fetch = min(fetch * 4, total)


def exact_top_k(
    vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over a candidate set (FAISS's brute force beats BLAS gemv)."""
    import faiss

    k = min(k, len(ids))
    scores, rows = faiss.knn(
        np.ascontiguousarray(query[None, :], dtype=np.float32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return scores[0], ids[rows[0]]


@contextmanager
def threads_for(n_queries: int) -> Iterator[None]:
    """One OpenMP thread for a single query, all of them for batches.

    A lone query is too small to split: on a busy 2-core machine two FAISS threads waiting on
    each other made one flat search at 100,000 x 512 take 40 ms instead of 7 ms.
    """
    import faiss

    if n_queries > 1:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
