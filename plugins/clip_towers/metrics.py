"""Recall@k for cross-modal retrieval, where several candidates can be right.

A caption like "a red circle on the left" describes many images, so "the one image it was paired
with" is not the only correct answer. Every pair has a group (by default its caption text;
``--group-field`` names another field) and a candidate is a hit when one of *its* groups is the
query's group. An image paired with several captions (COCO style) carries all their groups.
With unique captions and one caption per image this is exactly the usual pair recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10)
_QUERY_CHUNK = 1024


def recall_at_k(
    queries: np.ndarray,
    candidates: np.ndarray,
    query_groups: Sequence[frozenset[int]],
    candidate_groups: Sequence[frozenset[int]],
    ks: Sequence[int] = KS,
) -> dict[int, float]:
    """Share of queries with a hit among the ``k`` most similar candidates, for each ``k``.

    A candidate is a hit when it shares a group with the query.
    """
    if len(queries) == 0 or len(candidates) == 0:
        return {k: 0.0 for k in ks}
    depth = min(max(ks), len(candidates))
    hits = np.zeros((len(queries), depth), dtype=bool)
    for start in range(0, len(queries), _QUERY_CHUNK):
        scores = queries[start : start + _QUERY_CHUNK] @ candidates.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        for row, ranked in enumerate(top):
            groups = query_groups[start + row]
            hits[start + row] = [not groups.isdisjoint(candidate_groups[c]) for c in ranked]
    first_hit = np.cumsum(hits, axis=1) > 0
    return {k: float(first_hit[:, min(k, depth) - 1].mean()) for k in ks}


def both_ways(
    text_vectors: np.ndarray,
    image_vectors: np.ndarray,
    text_groups: Sequence[int],
    image_groups: Sequence[frozenset[int]],
    ks: Sequence[int] = KS,
) -> dict[str, dict[int, float]]:
    """Recall@k text -> image (every caption queries the images) and image -> text."""
    caption_groups = [frozenset({int(g)}) for g in text_groups]
    return {
        "text_to_image": recall_at_k(text_vectors, image_vectors, caption_groups, image_groups,
                                     ks),
        "image_to_text": recall_at_k(image_vectors, text_vectors, image_groups, caption_groups,
                                     ks),
    }
