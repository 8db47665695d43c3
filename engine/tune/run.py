"""`col.tune(...)` and `col.untune()`: train without the write lock, switch spaces in one commit.

Training reads one committed generation's base vectors and runs while searches and adds go on.
Only the switch takes the write lock: it saves the head, rebuilds the index from the exact
vectors of every live document *at that moment* (so documents added during training enter the
new space too) and commits the head, its threshold and the new index in one manifest rename.
Readers keep the old space until the rename; a crash before it leaves the old space, after it
the new one (a head file no manifest names is removed by the next writer).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.commit import Change
from engine.errors import BadInput
from engine.maintenance import new_index
from engine.manifest import Manifest, indexable
from engine.tune.data import (
    Examples,
    Snapshot,
    encode_texts,
    from_labels,
    from_pairs,
    read_negatives,
    read_snapshot,
)
from engine.tune.evaluate import better, evaluate
from engine.tune.full import (
    Features,
    FullConfig,
    commit_full,
    in_space,
    snapshot_features,
    train_full,
    vectors_of,
)
from engine.tune.head import Head, through
from engine.tune.space import trainable
from engine.tune.train import TuneConfig, train_head


@dataclass
class TuneReport:
    """Validation figures of the base space (``before``) and the tuned one (``after``).

    ``before`` is always the base encoder's space, also when re-tuning a tuned collection: a new
    head is trained from the base vectors and replaces the old one.

    Each holds ``knn@1``, ``recall@5``, ``mrr``, the calibrated ``threshold`` and, at it, the
    share of validation queries ``answered_right`` / ``answered_wrong`` (and
    ``negatives_rejected`` when negatives were given).
    """

    before: dict[str, Any]
    after: dict[str, Any]
    committed: bool
    reason: str
    mode: str
    train_examples: int
    val_examples: int
    negatives: int
    seed: int
    epochs: int
    best_epoch: int
    seconds: float
    head: str | None = None  # sha256 of the committed head
    #: `full=True`: validation figures of stage 1 (the head alone) and the sha256 of the
    #: committed encoder weights; ``after`` is then stage 2's
    stage1: dict[str, Any] | None = None
    encoder: str | None = None
    generation: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tune(
    col: Any,
    *,
    label_field: str | None = None,
    pairs: Any = None,
    negatives: Any = None,
    query_field: str = "query",
    id_field: str = "id",
    seed: int = 0,
    dry_run: bool = False,
    force: bool = False,
    progress: bool = False,
    config: TuneConfig | None = None,
    full: bool = False,
    full_config: FullConfig | None = None,
) -> TuneReport:
    """Train a head on the collection's own data and commit it if it helps on validation.

    ``label_field``: documents with that metadata field, grouped by its value. ``pairs``:
    (query text, document id) pairs, or a JSON-lines file with ``query_field`` and
    ``id_field``. ``negatives``: texts (or a file) that must find no answer; they only
    calibrate the threshold. ``dry_run`` measures without committing; ``force`` commits even
    when validation does not improve. ``full`` adds stage 2: the encoder's top layers train
    too (encoders that are :class:`~engine.encoders.Trainable`), and the collection is
    re-encoded through them (engine/tune/full.py).
    """
    started = time.perf_counter()
    if (label_field is None) == (pairs is None):
        raise BadInput("tune takes exactly one of: label_field= (a metadata field), pairs=")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise BadInput(f"seed must be an integer, got {seed!r}")
    encoder = trainable(col.encoder, col.name) if full else None
    snap = read_snapshot(col)

    def examples(snap: Snapshot, enc: Any) -> Examples:
        # One seeded generator per call: stage 2's split equals stage 1's, row for row.
        rng = np.random.default_rng(seed)
        if label_field is not None:
            return from_labels(snap, label_field, rng)
        return from_pairs(snap, pairs, enc, rng, query_field, id_field)

    ex = examples(snap, col.encoder)
    texts = read_negatives(negatives, query_field)
    neg = encode_texts(col.encoder, texts, snap.manifest.name, "negatives") if texts else None

    def score(head: Head) -> float:
        figures = evaluate(head, ex, None)
        return figures["knn@1"] + 1e-3 * figures["mrr"] + 1e-4 * figures["margin"]

    before = evaluate(None, ex, neg)
    head, history = train_head(ex, score, seed, config or TuneConfig(), progress)
    after = evaluate(head, ex, neg)
    stage1 = state = None
    if encoder is not None:
        stage1 = after
        fsnap, feats = snapshot_features(encoder, snap, progress)
        fex = examples(fsnap, Features(encoder, col.name))
        state, more = train_full(encoder, fex, head, seed, full_config or FullConfig(), progress)
        history += [{**r, "stage": 2} for r in more]
        if any(r["best"] and r["epoch"] > 0 for r in more):
            space = vectors_of(encoder, state.weights)
            fneg = space(encoder.frozen_features(texts)) if texts else None
            head, after = state.head, evaluate(state.head, in_space(fex, space), fneg)
        else:  # no stage-2 epoch beat the head alone: keep the encoder as it is, no re-encode
            state = None
    improved = better(after, before)
    report = TuneReport(
        before=before,
        after=after,
        committed=False,
        reason="",
        mode=ex.mode,
        train_examples=len(ex.anchors),
        val_examples=len(ex.val_queries),
        negatives=len(texts),
        seed=seed,
        epochs=history[-1]["epoch"],
        best_epoch=next(r["epoch"] for r in history if r["best"]),
        seconds=0.0,
        history=history,
        stage1=stage1,
    )
    if dry_run:
        report.reason = "dry run: nothing committed"
    elif not improved and not force:
        report.reason = (
            f"not committed: validation kNN@1 {after['knn@1']:.4f} does not beat the base "
            f"encoder's {before['knn@1']:.4f} (force=True commits anyway)"
        )
    else:
        record = {
            "threshold": after["threshold"],
            "mode": ex.mode,
            "label_field": label_field,
            "seed": seed,
            "at": time.time(),
            "validation": {"before": _short(before), "after": _short(after)},
        }
        if state is not None:
            m = commit_full(
                col,
                encoder,  # type: ignore[arg-type]
                state,
                snap,
                feats,
                {**record, "full": True},
                {"event": "tune", "mode": ex.mode, "head": head.sha256[:16], "full": True},
            )
            report.encoder = m.tune["encoder"]["sha256"]  # type: ignore[index]
        else:
            m = commit_head(col, head, record, ex)
        report.committed, report.head, report.generation = True, head.sha256, m.generation
        report.reason = "committed" if improved else "committed (forced)"
        if encoder is not None and state is None:
            report.reason += (
                " the head alone: no epoch of stage 2 beat it on validation, so the encoder "
                "was left as it is"
            )
    report.seconds = time.perf_counter() - started
    return report


def commit_head(col: Any, head: Head, record: dict[str, Any], ex: Examples) -> Manifest:
    """Switch the collection to ``head``'s space in one generation (see the module's doc)."""
    with col.writer.writing() as m:
        name = head.save(col.folder)
        index = _index_in_space(col, m, head)
        tune = {**record, "head": name, "sha256": head.sha256}
        return col.writer.commit(
            m,
            Change(
                index=index,
                tune=tune,
                event={
                    "event": "tune",
                    "mode": ex.mode,
                    "head": head.sha256[:16],
                    "count": m.count,
                },
            ),
        )


def untune(col: Any) -> Manifest:
    """Back to the base encoder's space as a new generation; the stored vectors are base ones."""
    with col.writer.writing() as m:
        if not m.tune:
            return m
        index = _index_in_space(col, m, None)
        return col.writer.commit(
            m,
            Change(index=index, tune={}, event={"event": "untune", "count": m.count}),
        )


def _index_in_space(col: Any, m: Manifest, head: Head | None) -> Any:
    live = indexable(col.store.live_ids(m.generation), m)
    return new_index(
        col.registry,
        m.index["kind"],
        m.index.get("params", {}),
        through(col.view.vectors, head),
        live,
    )


def _short(figures: dict[str, Any]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in figures.items() if isinstance(v, float)}
