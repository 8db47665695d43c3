"""Query planning: exact scoring for selective filters, a widening index search for broad ones.

A filtered search must return k hits whenever k documents match. Post-filtering a fixed number
of candidates cannot promise that (txtai's filtered recall@10 was about 0.5), so the plan
depends on how many documents match: few enough, and they are scored exactly from the stored
vectors; many, and the index is over-fetched and widened until k matching hits are found.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import numpy as np

from engine.live import LiveView
from engine.manifest import Manifest
from engine.store import Store

#: A filter matching at most this many documents is answered exactly from the stored vectors.
SELECTIVE_LIMIT = 20_000
#: Filters whose matching ids are remembered per generation.
FILTER_CACHE_SIZE = 64


class Planner:
    def __init__(self, view: LiveView, store: Store) -> None:
        self.view = view
        self.store = store
        self._filter_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def candidates_many(
        self, q: np.ndarray, k: int, where: dict[str, Any] | None, m: Manifest
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (ids, scores); unfiltered queries share one index call."""
        if where is None and len(q):
            scores, ids = self.view.load_index().search(q, k)
            return [(i[i >= 0], s[i >= 0]) for i, s in zip(ids, scores, strict=True)]
        return [self.candidates(row, k, where, m) for row in q]

    def candidates(
        self, q: np.ndarray, k: int, where: dict[str, Any] | None, m: Manifest
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the best k visible documents matching ``where``, best first."""
        index = self.view.load_index()
        if where is None:
            scores, ids = index.search(q[None, :], k)
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep]
        matching = self.matching(where, m.generation)
        if len(matching) <= SELECTIVE_LIMIT:
            if len(matching) == 0:
                return matching, np.zeros(0, dtype=np.float32)
            scores, ids = exact_top_k(self.view.vectors.get(matching), matching, q, k)
            return ids, scores
        total = len(index)
        fetch = min(k * 8, total)
        while True:
            scores, ids = index.search(q[None, :], fetch)
            cand, cand_scores = ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]
            ok = self.store.matching_ids(where, m.generation, among=cand)
            keep = np.isin(cand, ok)
            if keep.sum() >= k or fetch >= total:
                return cand[keep][:k], cand_scores[keep][:k]
            fetch = min(fetch * 4, total)

    def matching(self, where: dict[str, Any], generation: int) -> np.ndarray:
        """Ids matching a filter (at most SELECTIVE_LIMIT + 1), memoised per generation.

        Chatbots repeat the same few filters (a tenant, a language), and a committed generation
        never changes, so the answer can be reused until the next commit.
        """
        key = (json.dumps(where, sort_keys=True), generation)
        found = self._filter_cache.get(key)
        if found is None:
            found = self.store.matching_ids(where, generation, limit=SELECTIVE_LIMIT + 1)
            self._filter_cache[key] = found
            while len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        else:
            self._filter_cache.move_to_end(key)
        return found


def exact_top_k(
    vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over a candidate set."""
    scores = vectors @ query
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    order = top[np.argsort(-scores[top], kind="stable")]
    return scores[order], ids[order]
