"""Index upkeep that never calls the encoder: rebuild, reindex, compaction.

All three read the exact vectors the collection keeps and commit through the normal write
protocol, so readers keep searching the previous generation until the manifest switches, and a
crash half-way leaves the old generation in force.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from engine.commit import Change, Writer
from engine.live import LiveView
from engine.manifest import Manifest, indexable
from engine.registry import Registry
from engine.store import Store
from engine.tune.space import TUNED_DIR
from engine.vectors import VectorFile
from indexes.base import LookupRows, VectorIndex

CHUNK = 65_536


def build_index(
    registry: Registry, kind: str, params: dict[str, Any], view: LiveView, live: np.ndarray
) -> VectorIndex:
    """A fresh index of ``kind`` over the live ids, from the stored exact vectors."""
    return new_index(registry, kind, params, view.index_vectors, live)


def new_index(
    registry: Registry, kind: str, params: dict[str, Any], vectors: Any, live: np.ndarray
) -> VectorIndex:
    """``vectors``: the exact vectors in the index's space (through the head when tuned)."""
    index = registry.index_class(kind)(vectors.dim, **params)
    index.attach_vectors(vectors)
    fill(index, vectors, live)
    return index


def fill(index: VectorIndex, vectors: Any, live: np.ndarray) -> None:
    """Load ``live`` into ``index``: in one go where the kind trains on it, else in chunks."""
    rebuild = getattr(index, "rebuild", None)
    if rebuild is not None:
        rebuild(live, LookupRows(live, vectors.checked()))  # in chunks, never one full copy
    else:
        index.reserve(len(live))  # sized once, not regrown chunk by chunk
        for start in range(0, len(live), CHUNK):
            chunk = live[start : start + CHUNK]
            index.add(chunk, vectors.get_checked(chunk))
    vectors.release()


def reindex(
    writer: Writer,
    registry: Registry,
    store: Store,
    m: Manifest,
    kind: str,
    params: dict[str, Any],
    recall: dict[str, Any] | None = None,
) -> Manifest:
    """Build ``kind`` from the stored vectors and commit it (with new recall settings if given)."""
    live = indexable(store.live_ids(m.generation), m)
    index = build_index(registry, kind, params, writer.view, live)
    return writer.commit(
        m,
        Change(
            index=index,
            index_kind={"kind": kind, "params": index.params},
            event={"event": "reindex", "from": m.index["kind"], "to": kind, "count": len(live)},
            recall=recall,
        ),
    )


def build_keywords(writer: Writer, store: Store, m: Manifest) -> Manifest:
    """Index the stored texts by keyword and commit the collection as having that index.

    Built in the store's own transaction before the manifest names it: a crash in between
    leaves a table nobody reads (the manifest still says no index), dropped by the next build.
    """
    from engine.keywords import VERSION

    rows = store.build_keywords()
    return writer.commit(
        m,
        Change(
            keyword={"version": VERSION},
            event={"event": "keyword-index", "rows": rows},
        ),
    )


def rebuild_if_needed(writer: Writer, store: Store, m: Manifest) -> Manifest:
    """Rebuild the index from exact vectors when it says it drifted or holds too many deletes."""
    index = writer.view.load_index()
    reason = index.needs_rebuild()
    if not reason:
        return m
    # Built aside, never in place: searches keep using the shared index until the commit.
    live = indexable(store.live_ids(m.generation), m)
    index = build_index(
        writer.view.registry, m.index["kind"], m.index.get("params", {}), writer.view, live
    )
    return writer.commit(m, Change(index=index, event={"event": "rebuild", "reason": reason}))


def compact(writer: Writer, registry: Registry, store: Store, m: Manifest) -> Manifest:
    """Rewrite the exact vectors without dead rows, rebuild the index, purge dead rows.

    A `tune --full` collection keeps a second log, its tuned encoder's vectors (tuned/), with
    the same dead rows: it is compacted alongside, in the same commit.
    """
    view = writer.view
    live = indexable(store.live_ids(m.generation), m)
    files = writer.vectors.compact(view.vectors, live, m.next_id)
    fresh = VectorFile(view.folder / "vectors", m.dim, files)
    tuned, tune = None, None
    if view.tuned is not None:
        tuned_files = writer.tuned.compact(view.tuned, live, m.next_id)
        tuned = VectorFile(view.folder / TUNED_DIR, m.dim, tuned_files)
        tune = {**m.tune, "vectors": asdict(tuned_files)}  # type: ignore[dict-item]
    vectors = view.space_vectors(fresh, tuned)
    index = new_index(registry, m.index["kind"], m.index.get("params", {}), vectors, live)
    dead = m.next_id - len(live)
    new = writer.commit(
        m,
        Change(
            index=index,
            vector_files=files,
            tune=tune,
            event={"event": "compact", "live": len(live), "dropped_rows": int(dead)},
        ),
    )
    writer.vectors.remove_epochs_before(files.epoch)
    if tuned is not None:
        writer.tuned.remove_epochs_except(tuned.files.epoch)
    store.vacuum()
    return new
