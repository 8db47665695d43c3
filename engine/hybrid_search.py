"""Running keyword and hybrid searches at one committed generation.

Both sides see the same generation: the vector side runs while the view is held (the index
must not change under it), and the keyword side then queries the store "as of" that
generation, outside the lock, so a writer waits for the index search only. A concurrent commit
may purge rows of that generation before they are fetched; the caller searches again then, as
for vector searches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import hybrid
from engine.keywords import query_units
from engine.live import LiveView, Served
from engine.min_score import resolve_min_score
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
    queries: np.ndarray | Callable[[Served], np.ndarray | None] | None,
    k: int,
    where: dict[str, Any] | None,
    alpha: float,
    fusion: str,
    min_score: Any = None,
) -> tuple[list[Ranked], dict[int, Document]]:
    """Hybrid search when ``queries`` gives vectors, keyword search alone when it is None.

    ``queries`` may be a function of the searched generation (after `tune --full` a query
    must be encoded by the generation's own tuned encoder).

    With ``min_score`` only hits whose vector similarity clears it are kept: a hit the vector
    side did not find has no similarity to vouch for it.
    """
    units = [query_units(t) for t in texts]
    for _ in range(3):
        with view.reading() as served:
            m = served.manifest
            floor = resolve_min_score(min_score, m)
            n = min(hybrid.depth(k), max(m.count, 1))
            vec = None
            q = queries(served) if callable(queries) else queries
            if q is not None:
                # The query enters the space of the generation it searches (a tuned head).
                mapped = q if served.head is None else served.head.apply(q)
                vec = planner.candidates_many(mapped, n, where, served)
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
        if floor is not None:
            results = [
                Ranked([r for r in ranked.rows if r[2] is not None and r[2] >= floor])
                for ranked in results
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
