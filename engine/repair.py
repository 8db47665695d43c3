"""Finding and mending damaged collections: `hubsearch verify` and `hubsearch repair`.

Damage is never served silently: every index snapshot carries a CRC-32 in the manifest, the
exact vectors a CRC-32 per chunk of rows, and open or replay refuses a mismatch with
`CorruptCollection`. `verify` also loads the index fully (a snapshot with a valid CRC may still
not load), compares a sample of the vectors it holds with the exact vectors, and asks SQLite to
check the store.

Repair rebuilds what can be rebuilt: the index always (from the store and the exact vectors);
damaged exact vectors from an intact index snapshot that holds them in full, else by re-encoding
the stored content. Only `flat` snapshots and `hnsw` snapshots written before vectors were stored
once hold them: a graph snapshot now keeps the graph and takes its vectors from the very log
being repaired (see :meth:`indexes.base.VectorIndex.save_sharing_vectors`). Documents whose
vectors can be restored neither way (precomputed vectors, no usable snapshot) are never deleted
on repair's own initiative: they stay in the store, out of the index, listed in the manifest,
and `verify` keeps naming them until the caller adds them again or asks for them to be dropped.
A damaged store cannot be rebuilt: the documents live only there, and repair says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from engine.blobs import BLOBS, Blobs, listed
from engine.errors import CollectionLocked, CorruptCollection, HubsearchError
from engine.live import LiveView, snapshot_path
from engine.manifest import (
    Manifest,
    VectorFiles,
    file_crc32,
    indexable,
    read_manifest,
    write_manifest,
)
from engine.store import Store
from engine.tune.space import TUNED_DIR, tuned_files
from engine.vectors import VectorWriter, damaged_tail_rows

#: Documents whose indexed vector `verify` compares with the exact vectors.
SAMPLE = 256
#: For kinds that keep only codes (trained ivfpq) the sample is self-queried instead; an
#: approximate index may miss a few, a wrong code book or stale codes miss most.
SELF_QUERY_MISSES = 0.1
#: Seconds `verify` waits for uploads to let the blob folder be looked at alone.
BLOB_LOCK_WAIT = 5.0


def diagnose(folder: Path, registry: Any) -> list[str]:
    """Everything wrong with a collection, as sentences; an empty list means healthy."""
    try:
        m = read_manifest(folder)
        store = _store(folder, m)
    except CorruptCollection as exc:
        return [str(exc)]
    try:
        problems = store.check()
        if problems:
            return problems
        problems = _vector_problems(folder, m)
        if problems:  # the index cannot be rebuilt from these vectors: check the snapshot alone
            snap = _snapshot_problem(folder, m, registry)
            return problems + ([snap] if snap else [])
        tuned = _tuned_problems(folder, m)
        if tuned:  # the index holds these vectors: it cannot be checked against them
            return problems + tuned
        problems.extend(_index_problems(folder, store, registry, m))
        problems.extend(_unrecoverable_problem(store, m))
        if m.keyword is not None:
            problems.extend(store.check_keywords())
        problems.extend(_blob_problems(folder, store))
    except CorruptCollection as exc:
        problems = [str(exc)]
    finally:
        store.close()
    return problems


def repair(
    folder: Path,
    registry: Any,
    build_encoder: Any,
    lock_timeout: float = 30,
    drop_unrecoverable: bool = False,
) -> list[str]:
    """Mend what can be mended under the write lock; returns the actions taken.

    Raises `CorruptCollection` for what it cannot mend (a damaged store).
    """
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
        damage = store.check()
        if damage:
            raise CorruptCollection(
                f"{damage[0]}; the documents live only there and cannot be rebuilt from the "
                f"vectors: restore {store.where} from a backup (nothing was changed)"
            )
        if store.max_generation() > m.generation:
            store.rollback_after(m.generation)
            actions.append("rolled back rows of an interrupted write")
        vector_problems = _vector_problems(folder, m)
        rebuild = False
        if vector_problems:
            actions.extend(vector_problems)
            m = _rebuild_vectors(folder, m, store, registry, build_encoder, actions)
            rebuild = True
        elif _tuned_problems(folder, m):
            pass  # not mended here (see _tuned_problems): verify, run next, reports them
        else:
            index_problems = _index_problems(folder, store, registry, m)
            actions.extend(index_problems)
            rebuild = bool(index_problems)
        if m.keyword is not None and store.check_keywords():
            # Built from the stored texts in one transaction, as `reindex --keyword` does.
            rows = store.build_keywords()
            actions.append(f"rebuilt the keyword index from the stored texts ({rows} rows)")
        lost = _still_lost(store, m)
        if len(lost) and drop_unrecoverable:
            m = _drop(folder, m, store, lost, actions)
            rebuild = True
        elif len(lost):
            actions.append(_lost_sentence(store, m, lost))
        if rebuild:
            m = m.evolve(
                snapshot_generation=None, snapshot_crc32=None, changes_since_snapshot=m.count
            )
            write_manifest(folder, m)
    finally:
        lock.release()
        store.close()
    return actions


def _blob_problems(folder: Path, store: Store) -> list[str]:
    """Live documents whose stored image is gone, and stored images no document uses."""
    blobs = Blobs(folder, store, BLOB_LOCK_WAIT)
    problems = [f"the image file {c} of a live document is missing" for c in blobs.missing()]
    try:
        orphans = blobs.orphans()
    except CollectionLocked:  # uploads kept it busy: unknown, so not reported
        orphans = []
    if orphans:
        problems.append(
            f"{len(orphans)} image files in {BLOBS}/ are used by no document "
            f"({listed(orphans)}); `hubsearch repair {folder.name}` removes them"
        )
    return problems


def _store(folder: Path, m: Manifest) -> Store:
    from engine.collection import open_store

    return open_store(folder, m)


def _vector_problems(folder: Path, m: Manifest) -> list[str]:
    return _log_problems(folder / "vectors", m.dim, m.vectors, "exact vectors")


def _tuned_problems(folder: Path, m: Manifest) -> list[str]:
    """The tuned encoder's log of a `tune --full` collection, checked as the exact vectors are.

    Repair does not rebuild it (its rows came from the tuned encoder; re-encoding them there
    is not built yet), so the advice is the way back that always works.
    """
    files = tuned_files(m)
    if files is None:
        return []
    problems = _log_problems(folder / TUNED_DIR, m.dim, files, "tuned vectors")
    advice = (
        f"; repair cannot rebuild tuned vectors: untune (`hubsearch tune {folder.name} "
        f"--reset`) and tune again"
    )
    return [p + advice for p in problems]


def _log_problems(vec: Path, dim: int, v: VectorFiles, what: str) -> list[str]:
    """Missing, truncated or damaged files of one vector log (`vectors/` or `tuned/`)."""
    problems = []
    tail = vec / f"tail-{v.epoch}.f32"
    if v.tail_rows:
        if not tail.exists():
            problems.append(f"{what} file {tail.name} is missing")
        else:
            have = tail.stat().st_size // (dim * 4)
            if have < v.tail_rows:
                problems.append(
                    f"{what} file {tail.name} is truncated "
                    f"(holds {have} rows, the manifest commits {v.tail_rows})"
                )
            for start, end in damaged_tail_rows(vec, dim, v):
                if end <= have:
                    problems.append(
                        f"{what} file {tail.name} is damaged "
                        f"(checksum mismatch in rows {start}-{end - 1})"
                    )
    if v.base_rows:
        base, ids = _epoch_paths(vec, v.epoch)
        if not base.exists() or not ids.exists():
            problems.append(f"{what} base of epoch {v.epoch} is missing")
        elif file_crc32(base) != v.base_crc32:
            problems.append(f"{what} base {base.name} is damaged (checksum mismatch)")
    return problems


def _base_paths(folder: Path, m: Manifest) -> tuple[Path, Path]:
    return _epoch_paths(folder / "vectors", m.vectors.epoch)


def _epoch_paths(vec: Path, epoch: int) -> tuple[Path, Path]:
    return vec / f"base-{epoch}.f32.npy", vec / f"base-{epoch}.ids.npy"


def _snapshot_problem(folder: Path, m: Manifest, registry: Any) -> str | None:
    """What keeps the manifest's snapshot from loading: missing, checksum, or FAISS's refusal."""
    try:
        _load_snapshot(folder, m, registry)
    except CorruptCollection as exc:
        return str(exc)
    return None


def _load_snapshot(folder: Path, m: Manifest, registry: Any) -> Any:
    """The snapshot's index loaded in full, or None when the manifest names none."""
    if m.snapshot_generation is None:
        return None
    path = snapshot_path(folder, m.snapshot_generation)
    if not path.exists():
        raise CorruptCollection(f"index snapshot {path.name} named by the manifest is missing")
    if m.snapshot_crc32 is not None and file_crc32(path) != m.snapshot_crc32:
        raise CorruptCollection(f"index snapshot {path.name} is damaged (checksum mismatch)")
    try:
        return registry.index_class(m.index["kind"]).load(path, m.dim, **m.index.get("params", {}))
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise CorruptCollection(f"index snapshot {path.name} does not load ({exc})") from None


def _index_problems(folder: Path, store: Store, registry: Any, m: Manifest) -> list[str]:
    """Load the index as a reader would (snapshot in full, then the replay) and compare it
    with the store's ids and, on a sample, with the exact vectors."""
    view = LiveView(folder, store, registry)
    try:
        index = view.load_index()
    except HubsearchError as exc:
        return [str(exc).split("; run `hubsearch repair")[0]]
    m = view.manifest  # what was loaded, should a writer have committed meanwhile
    ids = getattr(index, "ids", None)
    if ids is None:
        return []
    index_ids = np.sort(np.asarray(ids(), dtype=np.int64))
    live = indexable(store.live_ids(m.generation), m)
    if not np.array_equal(index_ids, live):
        return [f"the index holds {len(index_ids)} ids, the store {len(live)} live documents"]
    problem = _vector_mismatch(index, view, live)
    return [problem] if problem else []


def _vector_mismatch(index: Any, view: LiveView, live: np.ndarray) -> str | None:
    """Whether the index holds, under sampled ids, the vectors the exact-vector log holds.

    Ids and checksums cannot show an index that holds another vector under a right id (a
    snapshot written from a changing index, an id reused after a rollback).
    """
    if not len(live):
        return None
    rng = np.random.default_rng()
    sample = np.sort(rng.choice(live, size=min(SAMPLE, len(live)), replace=False))
    exact = view.index_vectors.get_checked(sample)
    stored = index.stored_vectors(sample)
    if stored is not None:
        found, vectors = stored
        order = np.argsort(found)
        if not np.array_equal(found[order], sample):
            return f"the index lacks vectors for some of its ids (sampled {len(sample)})"
        wrong = ~np.isclose(vectors[order], exact, rtol=0, atol=1e-5).all(axis=1)
        if not wrong.any():
            return None
        return (
            f"the index holds other vectors than the exact vectors for {int(wrong.sum())} of "
            f"{len(sample)} sampled documents (internal id {int(sample[wrong][0])}, ...)"
        )
    _, hits = index.search(exact, 10)
    missed = ~(hits == sample[:, None]).any(axis=1)
    if missed.mean() <= SELF_QUERY_MISSES:
        return None
    return (
        f"{int(missed.sum())} of {len(sample)} sampled documents are not found by their own "
        f"exact vector: the index's codes do not match the exact vectors"
    )


def _still_lost(store: Store, m: Manifest) -> np.ndarray:
    """Listed unrecoverable ids that are still live (an upsert or delete settles one)."""
    if not m.unrecoverable:
        return np.zeros(0, np.int64)
    live = store.live_ids(m.generation)
    return np.intersect1d(np.asarray(m.unrecoverable, dtype=np.int64), live)


def _lost_sentence(store: Store, m: Manifest, lost: np.ndarray) -> str:
    docs = store.fetch(lost[:20], m.generation)
    names = [docs[i].id for i in lost[:20].tolist() if i in docs]
    return (
        f"{len(lost)} documents have lost their vectors and are not searchable "
        f"({', '.join(names)}{' ...' if len(lost) > 20 else ''}); add them again, or run "
        f"`hubsearch repair --drop-unrecoverable {m.name}` to remove them"
    )


def _unrecoverable_problem(store: Store, m: Manifest) -> list[str]:
    lost = _still_lost(store, m)
    return [_lost_sentence(store, m, lost)] if len(lost) else []


def _drop(
    folder: Path, m: Manifest, store: Store, lost: np.ndarray, actions: list[str]
) -> Manifest:
    docs = store.fetch(lost, m.generation)
    gen = m.generation + 1
    store.write(gen, [], lost.tolist())
    m = m.evolve(
        generation=gen,
        count=store.count(gen),
        unrecoverable=(),
        history=(*m.history, {"event": "repair-drop-unrecoverable", "dropped": len(lost)}),
    )
    write_manifest(folder, m)
    names = [docs[i].id for i in lost[:20].tolist() if i in docs]
    actions.append(
        f"removed {len(lost)} documents whose vectors were lost: "
        f"{', '.join(names)}{' ...' if len(lost) > 20 else ''}"
    )
    return m


class _Rows:
    """The rows of a damaged epoch that passed their checksums, read as they are on disk."""

    def __init__(self, folder: Path, m: Manifest) -> None:
        v = m.vectors
        self.m = m
        tail = folder / "vectors" / f"tail-{v.epoch}.f32"
        have = tail.stat().st_size // (m.dim * 4) if tail.exists() else 0
        rows = min(have, v.tail_rows)
        self.tail = (
            np.memmap(tail, dtype=np.float32, mode="r", shape=(rows, m.dim))
            if rows
            else np.zeros((0, m.dim), np.float32)
        )
        bad = np.zeros(v.tail_rows, bool)
        for start, end in damaged_tail_rows(folder / "vectors", m.dim, v):
            bad[start:end] = True
        self.tail_ok = ~bad
        self.base_ids = np.zeros(0, np.int64)
        self.base = np.zeros((0, m.dim), np.float32)
        base, ids = _base_paths(folder, m)
        if v.base_rows and base.exists() and ids.exists() and file_crc32(base) == v.base_crc32:
            try:
                self.base_ids = np.load(ids, mmap_mode="r")
                self.base = np.load(base, mmap_mode="r")
            except (OSError, ValueError):
                pass

    def intact(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` have a row that passed its checksum."""
        v = self.m.vectors
        ok = np.zeros(len(ids), bool)
        in_tail = (ids >= v.tail_start) & (ids < v.tail_start + v.tail_rows)
        ok[in_tail] = self.tail_ok[ids[in_tail] - v.tail_start]
        if len(self.base_ids):
            ok[~in_tail] = np.isin(ids[~in_tail], self.base_ids)
        return ok

    def get(self, ids: np.ndarray) -> np.ndarray:
        v = self.m.vectors
        out = np.empty((len(ids), self.m.dim), np.float32)
        in_tail = ids >= v.tail_start
        out[in_tail] = self.tail[ids[in_tail] - v.tail_start]
        if (~in_tail).any():
            out[~in_tail] = self.base[np.searchsorted(self.base_ids, ids[~in_tail])]
        return out


def _rebuild_vectors(
    folder: Path,
    m: Manifest,
    store: Store,
    registry: Any,
    build_encoder: Any,
    actions: list[str],
) -> Manifest:
    """A new vector epoch: intact rows kept, damaged ones restored from the snapshot or
    re-encoded; the rest listed in the manifest as unrecoverable, their documents kept."""
    live = store.live_ids(m.generation)
    rows = _Rows(folder, m)
    suspect = live[~rows.intact(live)]
    restored: dict[int, np.ndarray] = {}
    from_snapshot = _from_snapshot(folder, m, registry, suspect, restored)
    left = np.setdiff1d(suspect, np.fromiter(restored, np.int64, len(restored)))
    re_encoded = _re_encode(store, m, build_encoder, left, restored)
    lost = np.setdiff1d(suspect, np.fromiter(restored, np.int64, len(restored)))
    keep = np.setdiff1d(live, lost)

    def fetch(ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), m.dim), np.float32)
        fixed = np.isin(ids, suspect)
        out[~fixed] = rows.get(ids[~fixed])
        for j in np.flatnonzero(fixed).tolist():
            out[j] = restored[int(ids[j])]
        return out

    writer = VectorWriter(folder / "vectors", m.dim)
    files = writer.write_epoch(m.vectors.epoch + 1, keep, fetch, m.next_id)
    gen = m.generation + 1
    new = m.evolve(
        generation=gen,
        vectors=files,
        count=store.count(m.generation),
        unrecoverable=tuple(sorted({*_still_lost(store, m).tolist(), *lost.tolist()})),
        history=(
            *m.history,
            {
                "event": "repair-vectors",
                "from_snapshot": from_snapshot,
                "re_encoded": re_encoded,
                "unrecoverable": len(lost),
            },
        ),
    )
    write_manifest(folder, new)
    writer.remove_epochs_before(files.epoch)
    actions.append(
        f"rewrote the exact vectors: {len(keep) - len(suspect) + len(lost)} intact, "
        f"{from_snapshot} restored from the index snapshot, {re_encoded} re-encoded from "
        f"stored content, {len(lost)} could not be restored"
    )
    return new


def _from_snapshot(
    folder: Path, m: Manifest, registry: Any, ids: np.ndarray, out: dict[int, np.ndarray]
) -> int:
    """Vectors of ``ids`` from an intact snapshot of a kind that keeps them in full.

    An id's vector never changes, so any committed snapshot that holds the id holds its vector.
    A tuned collection's snapshot holds head(vector), not the base vector the log keeps. A graph
    snapshot written without its vectors is loaded here without them (nothing is attached), so
    its ``stored_vectors`` is None: the log it would read them from is what is being repaired.
    """
    if not len(ids) or m.tune:
        return 0
    try:
        index = _load_snapshot(folder, m, registry)
    except CorruptCollection:
        return 0
    stored = None if index is None else index.stored_vectors(ids)
    if stored is None:
        return 0
    found, vectors = stored
    out.update(zip(found.tolist(), np.asarray(vectors, np.float32), strict=True))
    return len(found)


def _re_encode(
    store: Store, m: Manifest, build_encoder: Any, ids: np.ndarray, out: dict[int, np.ndarray]
) -> int:
    """Vectors of ``ids`` encoded again from their stored content, where the encoder can."""
    if not len(ids):
        return 0
    docs = store.fetch(ids, m.generation)
    try:
        encoder = build_encoder(m.encoder["name"], m.encoder.get("options", {}))
    except HubsearchError:
        return 0
    by_modality: dict[str, list[int]] = {}
    for iid in ids.tolist():
        if iid in docs and docs[iid].modality in encoder.modalities:
            by_modality.setdefault(docs[iid].modality, []).append(iid)
    done = 0
    for modality, todo in by_modality.items():
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            try:
                encoded = encoder.encode([docs[i].content for i in chunk], modality)
            except HubsearchError:
                continue
            out.update(zip(chunk, encoded, strict=True))
            done += len(chunk)
    return done
