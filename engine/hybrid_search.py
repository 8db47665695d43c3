"""Running keyword and hybrid searches at one committed generation.

Both sides see the same generation: the vector side runs while the view is held (the index
must not change under it), and the keyword side then queries the store "as of" that
generation, outside the lock, so a writer waits for the index search only. A concurrent commit
may purge rows of that generation before they are fetched; the caller searches again then, as
for vector searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import hybrid
from engine.keywords import query_units
from engine.live import LiveView
from engine.search import Planner
from engine.store import Document, Store

_NONE = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


@dataclass(frozen=True)
class Ranked:
    """One query's hits before they become `Hit`s: id, score, similarity, keyword score."""

    rows: list[tuple[int, float, float | None, float | None]]


def run(
    view: LiveView,
    planner: Planner,
    store: Store,
    texts: Sequence[str],
    q: np.ndarray | None,
    k: int,
    where: dict[str, Any] | None,
    alpha: float,
    fusion: str,
) -> tuple[list[Ranked], dict[int, Document]]:
    """Hybrid search when query vectors ``q`` are given, keyword search alone otherwise."""
    units = [query_units(t) for t in texts]
    for _ in range(3):
        with view.reading() as served:
            m = served.manifest
            n = min(hybrid.depth(k), max(m.count, 1))
            vec = planner.candidates_many(q, n, where, served) if q is not None else None
        kws = [
            store.keyword_search(u, m.generation, n if q is not None else k, where, m.count)
            if u
            else _NONE
            for u in units
        ]
        results = [
            _combine(kw, None if vec is None else vec[i], k, alpha, fusion)
            for i, kw in enumerate(kws)
        ]
        wanted = sorted({row[0] for r in results for row in r.rows})
        docs = store.fetch(wanted, m.generation)
        if len(docs) == len(wanted):
            break
    return results, docs


def _combine(
    kw: tuple[np.ndarray, np.ndarray],
    vec: tuple[np.ndarray, np.ndarray] | None,
    k: int,
    alpha: float,
    fusion: str,
) -> Ranked:
    if vec is None:
        return Ranked(
            [(i, s, None, s) for i, s in zip(kw[0].tolist(), kw[1].tolist(), strict=True)]
        )
    fused = hybrid.fuse(vec, kw, k, alpha, fusion)
    return Ranked(
        [
            (i, s, fused.similarity.get(i), fused.keyword.get(i))
            for i, s in zip(fused.ids.tolist(), fused.scores.tolist(), strict=True)
        ]
    )
