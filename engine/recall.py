"""The recall promise: measure an index on the collection's own vectors and pick its knobs.

A collection keeps a recall target (recall@10 against exact search, filtered searches
included). This module measures what the index in force delivers and finds the cheapest
search-time setting (``efSearch``; ``nprobe`` and re-rank depth) that meets the target:

* **Queries** are a random sample of stored vectors, answered by *held-out views* of the index
  (:meth:`indexes.base.VectorIndex.held_out`) with the sample dropped from their answers. A
  stored vector used as a query in a graph walks straight to the neighbours it was linked to
  at insertion and overstates recall (0.988 against 0.944 for new queries at efSearch 10);
  with the sample unlinked from a copy of the links it understates it (0.910), so `hnsw`
  answers with both and the per-query mean is the estimate (0.949). Other kinds answer as
  they are.
* **Truth** is exact top-10 over every stored vector except the sample, read from the exact
  vectors in chunks under short read locks.
* **Filters**: random allowed subsets at :data:`FILTER_SHARES` of the collection run through
  the planner's own broad-filter plan (:func:`engine.search.post_filtered`); a share that
  leaves at most ``SELECTIVE_LIMIT`` ids is answered exactly by the planner and counts 1.0.
* **Margin**: a setting meets the target when the estimate minus :data:`Z` standard errors of
  the per-query recall does (one-sided 90 %), for the unfiltered and each filtered sample.

Nothing here holds a lock for long: truth is computed outside locks on copied chunks, and
searches run in batches of :data:`BATCH` queries, each under the view's shared lock (the lock
every search takes), so writers wait at most one batch. Scheduling and committing the result
live in :mod:`engine.recall_jobs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import BadInput

K = 10
DEFAULT_TARGET = 0.95
DEFAULT_SAMPLE = 1000
DEFAULT_GROWTH = 2.0
#: Index options that configure the promise rather than the index (the engine keeps them in
#: the manifest's ``recall`` record; index kinds never see them).
OPTIONS = ("recall", "recall_sample", "recall_growth")
#: Shares of the collection admitted by the filters measured.
FILTER_SHARES = (0.5, 0.1)
#: Standard errors subtracted from an estimate before it is compared with the target.
Z = 1.28
#: Queries searched per read-locked step.
BATCH = 32
#: Rows of exact vectors read per read-locked step of the truth computation. A step holds
#: about sample x chunk x 20 bytes (scores, merged ids, partition order): at 16,384 rows a
#: measurement of 100,000 x 512 raised the process's peak memory by 1,070 MB (and took 15 s);
#: at 512 by 220 MB (6 s), most of it the unlinked copy of the graph's links.
TRUTH_CHUNK = 512
#: At most 1 / this of the collection is held out for unfiltered queries (plus a quarter as
#: many for each filter), so small collections keep most of their points as the answers.
HELD_OUT_SHARE = 10
#: Collections smaller than this are not measured (too few points to hold a sample out).
MIN_COUNT = 200

Progress = Callable[[int, int], None]


class Stale(Exception):
    """The index was replaced while it was being measured: measure the new one instead."""


# ---------------------------------------------------------------------- configuration


def split_options(options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index options, recall options) out of options given for an index."""
    rest = dict(options or {})
    mine = {key: rest.pop(key) for key in OPTIONS if key in rest}
    return rest, mine


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Typed recall settings: ``target``, ``sample``, ``growth``; BadInput naming the option."""
    out: dict[str, Any] = {}
    try:
        if "recall" in options:
            out["target"] = float(options["recall"])
        if "recall_sample" in options:
            out["sample"] = int(options["recall_sample"])
        if "recall_growth" in options:
            out["growth"] = float(options["recall_growth"])
    except (TypeError, ValueError):
        raise BadInput(f"recall options must be numbers, got {options}") from None
    if "target" in out and not 0.5 <= out["target"] <= 1.0:
        raise BadInput(f"recall: target {out['target']:g} is not in [0.5, 1]")
    if "sample" in out and out["sample"] < 20:
        raise BadInput(f"recall_sample: {out['sample']} queries are too few (at least 20)")
    if "growth" in out and out["growth"] <= 1.0:
        raise BadInput(f"recall_growth: {out['growth']:g} must be above 1")
    return out


def config(record: dict[str, Any] | None) -> dict[str, Any]:
    """A manifest's recall settings with the defaults filled in."""
    record = record or {}
    return {
        "target": float(record.get("target", DEFAULT_TARGET)),
        "sample": int(record.get("sample", DEFAULT_SAMPLE)),
        "growth": float(record.get("growth", DEFAULT_GROWTH)),
    }


def exact(manifest: Any) -> bool:
    """Whether the index in force searches exactly (`flat`, `auto` while flat, `ivfpq` before
    training): recall 1 by construction, nothing to measure or commit.
    """
    kind, state = manifest.index["kind"], manifest.index.get("state") or {}
    if kind == "auto":
        kind, state = state.get("active", "flat"), state.get("index") or {}
    return kind == "flat" or (kind == "ivfpq" and not state.get("trained", False))


def due(manifest: Any) -> str | None:
    """Why the recall of the index in force should be measured now, or None."""
    if manifest.count < MIN_COUNT or exact(manifest):
        return None
    cfg = config(manifest.recall)
    measured = (manifest.recall or {}).get("measured")
    if measured is None:
        return "never measured"
    if measured["built"] != manifest.index.get("built", 0):
        return f"index rebuilt at generation {manifest.index.get('built', 0)}"
    if measured["target"] != cfg["target"]:
        return f"target changed to {cfg['target']:g}"
    if manifest.count >= cfg["growth"] * max(measured["count"], 1):
        return f"grown from {measured['count']} to {manifest.count} (growth={cfg['growth']:g})"
    return None


def apply(index: Any, manifest: Any) -> None:
    """Give ``index`` the knobs its last measurement chose (for the kind now active).

    Called whenever a view loads, replays or adopts an index: other processes pick up a new
    measurement on their next refresh. Knobs the user set are never in ``params``.
    """
    measured = (manifest.recall or {}).get("measured") or {}
    if measured.get("params") and measured.get("kind") == index.active_kind():
        index.set_knobs(**measured["params"])


# ---------------------------------------------------------------------- measuring


def measure(
    view: Any,
    settings: dict[str, Any],
    progress: Progress | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Measure the index ``view`` serves and choose its knobs; raises :class:`Stale`."""
    started = time.time()
    target, wanted = settings["target"], settings["sample"]
    with view.reading() as served:
        m, index = served.manifest, served.index
        built, kind = m.index.get("built", 0), index.active_kind()
        base = {"target": target, "kind": kind, "built": built, "generation": m.generation}
        if not index.knobs():
            return {**base, "recall": 1.0, "exact": True, "met": True, "count": len(index),
                    "sample": 0, "params": {}, "at": time.time()}  # fmt: skip
        ids = index.ids()
        rng = np.random.default_rng(m.generation if seed is None else seed)
        n = len(ids)
        n_plain = min(wanted, n // HELD_OUT_SHARE)
        n_filtered = max(1, n_plain // 4)
        sample = np.sort(rng.choice(ids, n_plain + n_filtered * len(FILTER_SHARES), replace=False))
        rng.shuffle(sample)
        pinned = {name: value for name, value in index.knobs().items()
                  if name in index.pinned_knobs()}  # fmt: skip
        ladder = _ladder(index.knob_ladder(), pinned)
        probes = index.held_out(sample)
        queries = np.ascontiguousarray(served.vectors.get(sample), dtype=np.float32)
        forced = getattr(index, "budget_forced", lambda: None)()
    groups = _groups(ids, sample, n_plain, n_filtered, rng)
    truth = _truth(view, built, ids, sample, queries, groups, progress)
    evaluate = _Evaluator(view, built, probes, ids, sample, queries, groups, truth, target)
    chosen, results = evaluate.cheapest(ladder, progress)
    met = chosen is not None
    if chosen is None:  # nothing within the budget meets it: the best there is
        tried = [s for s in ladder if _key(s) in evaluate.memo]
        chosen = max(tried, key=lambda s: evaluate.memo[_key(s)].worst)
    result = evaluate.memo[_key(chosen)]
    record = {
        **base,
        "recall": round(result.plain.estimate, 4),
        "filtered": {
            f"{g.share:g}": ("exact" if g.exact else round(r.estimate, 4))
            for g, r in zip(groups[1:], result.filtered, strict=True)
        },
        "sample": n_plain,
        "filtered_sample": n_filtered,
        "margin": round(result.margin, 4),
        "params": {k: v for k, v in chosen.items() if k not in pinned},
        "pinned": pinned,
        "met": met,
        "short_by": 0.0 if met else round(max(0.0, target - result.worst), 4),
        "count": n,
        "method": "held-out sample" + (", mean of linked and unlinked views" * (len(probes) > 1)),
        "tried": len(results),
        "at": time.time(),
        "seconds": round(time.time() - started, 2),
    }
    if not met:
        if forced:
            record["gave_way"] = f"recall (memory_mb kept: {forced})"
        elif pinned:
            knobs = ", ".join(f"{k}={v}" for k, v in pinned.items())
            record["gave_way"] = f"recall (kept the {knobs} you set; within the {kind} budget)"
        else:
            record["gave_way"] = f"recall (not reachable within the {kind} latency budget)"
    return record


def _ladder(ladder: list[dict[str, int]], pinned: dict[str, int]) -> list[dict[str, int]]:
    """The kind's ladder with pinned knobs held at the user's values, duplicates dropped."""
    out, seen = [], set()
    for setting in ladder:
        setting = {**setting, **pinned}
        if _key(setting) not in seen:
            seen.add(_key(setting))
            out.append(setting)
    return out


def _key(setting: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(setting.items()))


class _Group:
    """Queries (rows of the sample) and the ids their searches may return."""

    def __init__(self, rows: slice, share: float, allowed: np.ndarray | None, exact: bool) -> None:
        self.rows, self.share, self.allowed, self.exact = rows, share, allowed, exact


def _groups(
    ids: np.ndarray, sample: np.ndarray, n_plain: int, n_filtered: int, rng: Any
) -> list[_Group]:
    from engine import search

    others = ids[~np.isin(ids, sample)]
    groups = [_Group(slice(0, n_plain), 1.0, None, False)]
    for i, share in enumerate(FILTER_SHARES):
        start = n_plain + i * n_filtered
        allowed = np.sort(rng.choice(others, max(K, int(share * len(ids))), replace=False))
        exact = len(allowed) <= search.SELECTIVE_LIMIT  # the planner scores these exactly
        groups.append(_Group(slice(start, start + n_filtered), share, allowed, exact))
    return groups


def _check(view: Any, built: int) -> None:
    if view.manifest.index.get("built", 0) != built:
        raise Stale(f"index rebuilt at generation {view.manifest.index.get('built', 0)}")


def _truth(
    view: Any,
    built: int,
    ids: np.ndarray,
    sample: np.ndarray,
    queries: np.ndarray,
    groups: list[_Group],
    progress: Progress | None,
) -> np.ndarray:
    """Exact top-K ids per query over ``ids`` minus the sample (and outside its filter)."""
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.full((len(queries), K), -1, np.int64)
    steps = -(-len(ids) // TRUTH_CHUNK)
    for step, start in enumerate(range(0, len(ids), TRUTH_CHUNK)):
        part = ids[start : start + TRUTH_CHUNK]
        with view.lock.read():
            _check(view, built)
            vectors = np.asarray(view.index_vectors.get(part), dtype=np.float32)
        scores = queries @ vectors.T
        scores[:, np.isin(part, sample)] = -np.inf
        for group in groups:
            if group.allowed is not None and not group.exact:
                block = scores[group.rows]
                block[:, ~np.isin(part, group.allowed)] = -np.inf
                scores[group.rows] = block
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.broadcast_to(part, scores.shape)], axis=1)
        top = np.argpartition(-merged_scores, K - 1, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
        if progress:
            progress(step + 1, steps)
    best_ids[~np.isfinite(best_scores)] = -1
    return best_ids


class _Estimate:
    def __init__(self, per_query: np.ndarray) -> None:
        self.estimate = float(per_query.mean()) if len(per_query) else 1.0
        spread = float(per_query.std(ddof=1)) if len(per_query) > 1 else 0.0
        self.margin = Z * spread / np.sqrt(max(len(per_query), 1))

    @property
    def bound(self) -> float:
        return self.estimate - self.margin


class _Result:
    def __init__(self, plain: _Estimate, filtered: list[_Estimate]) -> None:
        self.plain, self.filtered = plain, filtered

    @property
    def worst(self) -> float:
        return min([self.plain.estimate] + [f.estimate for f in self.filtered])

    @property
    def margin(self) -> float:
        return self.plain.margin

    def meets(self, target: float) -> bool:
        return all(e.bound >= target for e in [self.plain, *self.filtered])


class _Evaluator:
    """Recall of the held-out view at a setting, memoised; searches in read-locked batches."""

    def __init__(
        self,
        view: Any,
        built: int,
        probes: list[Any],
        ids: np.ndarray,
        sample: np.ndarray,
        queries: np.ndarray,
        groups: list[_Group],
        truth: np.ndarray,
        target: float,
    ) -> None:
        self.view, self.built, self.probes = view, built, probes
        self.visible = np.sort(ids[~np.isin(ids, sample)])  # what an answer may contain
        self.queries, self.groups, self.truth, self.target = queries, groups, truth, target
        self.memo: dict[Any, _Result] = {}

    def cheapest(
        self, ladder: list[dict[str, int]], progress: Progress | None
    ) -> tuple[dict[str, int] | None, list[Any]]:
        """The first setting of the cost-ordered ladder that meets the target.

        Settings differing in one knob form chains ordered by that knob; recall rises along a
        chain, so each chain is bisected for its first passing setting, and the cheapest of
        those wins.
        """
        winners = []
        for chain in _chains(ladder):
            lo, hi, found = 0, len(chain) - 1, None
            while lo <= hi:
                mid = (lo + hi) // 2
                if self.result(chain[mid]).meets(self.target):
                    found, hi = chain[mid], mid - 1
                else:
                    lo = mid + 1
                if progress:
                    progress(len(self.memo), len(ladder))
            if found is not None:
                winners.append(found)
        if not winners:
            return None, list(self.memo)
        order = {_key(s): i for i, s in enumerate(ladder)}
        return min(winners, key=lambda s: order[_key(s)]), list(self.memo)

    def result(self, setting: dict[str, int]) -> _Result:
        key = _key(setting)
        if key not in self.memo:
            for probe in self.probes:
                probe.set_knobs(**setting)
            plain = self._mean([self._plain(p, self.groups[0]) for p in self.probes])
            filtered = [
                _Estimate(np.ones(1))
                if g.exact
                else self._mean([self._filtered(p, g) for p in self.probes])
                for g in self.groups[1:]
            ]
            self.memo[key] = _Result(plain, filtered)
        return self.memo[key]

    def _visible(self, found: np.ndarray) -> np.ndarray:
        slots = np.minimum(np.searchsorted(self.visible, found), len(self.visible) - 1)
        return (self.visible[slots] == found) & (found >= 0)

    @staticmethod
    def _mean(per_view: list[np.ndarray]) -> _Estimate:
        """Per-query recall averaged over the views (see VectorIndex.held_out)."""
        return _Estimate(np.mean(per_view, axis=0))

    def _plain(self, probe: Any, group: _Group) -> np.ndarray:
        rows = np.arange(len(self.queries))[group.rows]
        per_query = np.empty(len(rows))
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            with self.view.lock.read():
                _check(self.view, self.built)
                _, found = probe.search(self.queries[batch], K + 2)
            for j, row in enumerate(batch):
                got = found[j][self._visible(found[j])][:K]
                per_query[start + j] = _hits(got, self.truth[row])
        return per_query

    def _filtered(self, probe: Any, group: _Group) -> np.ndarray:
        from engine.search import post_filtered

        assert group.allowed is not None
        rows = np.arange(len(self.queries))[group.rows]
        per_query = np.empty(len(rows))

        def admit(candidates: np.ndarray) -> np.ndarray:
            return np.isin(candidates, group.allowed) & self._visible(candidates)

        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            with self.view.lock.read():
                _check(self.view, self.built)
                found = [post_filtered(probe, self.queries[row], K, admit)[0] for row in batch]
            for j, row in enumerate(batch):
                per_query[start + j] = _hits(found[j], self.truth[row])
        return per_query


def _hits(found: np.ndarray, truth: np.ndarray) -> float:
    truth = truth[truth >= 0]
    return len(np.intersect1d(found, truth)) / len(truth) if len(truth) else 1.0


def _chains(ladder: list[dict[str, int]]) -> list[list[dict[str, int]]]:
    """Settings grouped by all knobs but the first, each chain sorted by the first knob."""
    if not ladder:
        return []
    first = next(iter(ladder[0]))
    chains: dict[Any, list[dict[str, int]]] = {}
    for setting in ladder:
        rest = tuple(sorted((k, v) for k, v in setting.items() if k != first))
        chains.setdefault(rest, []).append(setting)
    return [sorted(chain, key=lambda s: s[first]) for chain in chains.values()]
