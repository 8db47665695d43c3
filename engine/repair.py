"""Finding and mending damaged collections: `hubsearch verify` and `hubsearch repair`.

Damage is never served silently: every index snapshot and vector file carries a CRC-32 in the
manifest, and open refuses a mismatch with `CorruptCollection`. Repair rebuilds what can be
rebuilt: the index always (from the store and the exact vectors), damaged exact vectors by
re-encoding the stored content when the encoder can. Documents whose vectors are lost and whose
content cannot be encoded again (precomputed vectors) are removed and listed, so the caller can
add them again. A missing store cannot be rebuilt: the documents live only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from engine.errors import CollectionLocked, CorruptCollection, HubsearchError
from engine.live import snapshot_path
from engine.manifest import Manifest, file_crc32, read_manifest, write_manifest
from engine.store import Store
from engine.vectors import VectorWriter


def diagnose(folder: Path, registry: Any) -> list[str]:
    """Everything wrong with a collection, as sentences; an empty list means healthy."""
    try:
        m = read_manifest(folder)
    except CorruptCollection as exc:
        return [str(exc)]
    problems = []
    try:
        store = _store(folder, m)
    except CorruptCollection as exc:
        return [str(exc)]
    problems.extend(_vector_problems(folder, m))
    snap = _snapshot_problem(folder, m)
    if snap:
        problems.append(snap)
    if not problems:
        from engine.live import LiveView

        view = LiveView(folder, store, registry)
        try:
            index_ids = np.sort(_index_ids(view.load_index()))
        except HubsearchError as exc:
            problems.append(str(exc))
        else:
            live = store.live_ids(m.generation)
            if index_ids is not None and not np.array_equal(index_ids, live):
                problems.append(
                    f"the index holds {len(index_ids)} ids, the store {len(live)} live documents"
                )
    store.close()
    return problems


def repair(folder: Path, registry: Any, build_encoder: Any, lock_timeout: float = 30) -> list[str]:
    """Mend what can be mended under the write lock; returns the actions taken."""
    m = read_manifest(folder)  # an unreadable manifest is beyond repair here
    store = _store(folder, m)
    lock = FileLock(str(folder / "write.lock"), timeout=lock_timeout)
    try:
        lock.acquire()
    except Timeout:
        raise CollectionLocked(
            f"collection {folder.name!r} is being written; repair later"
        ) from None
    actions: list[str] = []
    try:
        if store.max_generation() > m.generation:
            store.rollback_after(m.generation)
            actions.append("rolled back rows of an interrupted write")
        vector_problems = _vector_problems(folder, m)
        if vector_problems:
            actions.extend(vector_problems)
            m, lost = _rebuild_vectors(folder, m, store, build_encoder)
            actions.append(
                "rewrote the exact vectors (re-encoded from stored content)"
                + (
                    f"; removed {len(lost)} documents whose vectors were lost: "
                    f"{', '.join(lost[:20])}{' ...' if len(lost) > 20 else ''}"
                    if lost
                    else ""
                )
            )
        snap = _snapshot_problem(folder, m)
        if snap or vector_problems:
            if snap:
                actions.append(snap)
            m = m.evolve(
                snapshot_generation=None, snapshot_crc32=None, changes_since_snapshot=m.count
            )
            write_manifest(folder, m)
    finally:
        lock.release()
        store.close()
    return actions


def _store(folder: Path, m: Manifest) -> Store:
    from engine.collection import open_store

    return open_store(folder, m)


def _vector_problems(folder: Path, m: Manifest) -> list[str]:
    v, vec = m.vectors, folder / "vectors"
    problems = []
    tail = vec / f"tail-{v.epoch}.f32"
    need = v.tail_rows * m.dim * 4
    if v.tail_rows:
        if not tail.exists():
            problems.append(f"exact vectors file {tail.name} is missing")
        elif tail.stat().st_size < need:
            problems.append(f"exact vectors file {tail.name} is truncated")
        elif file_crc32(tail, need) != v.tail_crc32:
            problems.append(f"exact vectors file {tail.name} is damaged (checksum mismatch)")
    if v.base_rows:
        base = vec / f"base-{v.epoch}.f32.npy"
        ids = vec / f"base-{v.epoch}.ids.npy"
        if not base.exists() or not ids.exists():
            problems.append(f"exact vectors base of epoch {v.epoch} is missing")
        elif file_crc32(base) != v.base_crc32:
            problems.append(f"exact vectors base {base.name} is damaged (checksum mismatch)")
    return problems


def _snapshot_problem(folder: Path, m: Manifest) -> str | None:
    if m.snapshot_generation is None:
        return None
    path = snapshot_path(folder, m.snapshot_generation)
    if not path.exists():
        return f"index snapshot {path.name} named by the manifest is missing"
    if m.snapshot_crc32 is not None and file_crc32(path) != m.snapshot_crc32:
        return f"index snapshot {path.name} is damaged (checksum mismatch)"
    return None


def _index_ids(index: Any) -> np.ndarray | None:
    ids = getattr(index, "ids", None)
    return None if ids is None else np.asarray(ids(), dtype=np.int64)


def _rebuild_vectors(
    folder: Path, m: Manifest, store: Store, build_encoder: Any
) -> tuple[Manifest, list[str]]:
    """A new vector epoch: intact rows kept, damaged ones re-encoded or their documents dropped."""
    live = store.live_ids(m.generation)
    docs = store.fetch(live, m.generation)
    encoder = build_encoder(m.encoder["name"], m.encoder.get("options", {}))
    vectors: dict[int, np.ndarray] = {}
    lost: list[int] = []
    by_modality: dict[str, list[int]] = {}
    for iid in live.tolist():
        by_modality.setdefault(docs[iid].modality, []).append(iid)
    for modality, ids in by_modality.items():
        if modality not in encoder.modalities:
            lost.extend(ids)
            continue
        for start in range(0, len(ids), 256):
            chunk = ids[start : start + 256]
            try:
                encoded = encoder.encode([docs[i].content for i in chunk], modality)
            except HubsearchError:
                lost.extend(chunk)
                continue
            vectors.update(zip(chunk, encoded, strict=True))
    gen = m.generation + 1
    if lost:
        store.write(gen, [], lost)
    keep = np.array(sorted(vectors), dtype=np.int64)
    writer = VectorWriter(folder / "vectors", m.dim)
    files = writer.write_epoch(
        m.vectors.epoch + 1, keep, lambda ids: np.stack([vectors[int(i)] for i in ids]), m.next_id
    )
    lost_ext = [docs[i].id for i in lost]
    new = m.evolve(
        generation=gen,
        vectors=files,
        count=len(keep),
        history=(*m.history, {"event": "repair-vectors", "lost": len(lost)}),
    )
    write_manifest(folder, new)
    writer.remove_epochs_before(files.epoch)
    return new, lost_ext
