"""The write protocol of a collection: lock, recover, and commit one generation.

Every write (add, delete, checkpoint, reindex, compaction, an automatic rebuild) goes through
:meth:`Writer.commit`, so there is exactly one place where the order of durable steps is decided:
vectors, then store rows, then the index snapshot, then the manifest rename that commits.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from filelock import FileLock, Timeout

from engine.errors import CollectionLocked
from engine.live import LiveView, snapshot_path
from engine.manifest import (
    Manifest,
    VectorFiles,
    file_crc32,
    fsync_dir,
    new_uuid,
    write_manifest,
)
from engine.store import NewRow, Store
from engine.tune.head import PREFIX as HEAD_PREFIX
from engine.tune.space import PREFIX as TOP_PREFIX
from engine.tune.space import TUNED_DIR, tuned_files
from engine.vectors import VectorWriter
from indexes.base import VectorIndex

#: Snapshot the index once this share of the collection changed since the last snapshot.
SNAPSHOT_RATIO = 0.5
#: The same for kinds whose replay is a copy (flat): opening replays the delta from the exact
#: vectors about as fast as it would read a snapshot, so growth alone never earns one (a
#: snapshot rewrites the whole index; at 0.5 a growing collection rewrote it every few commits).
#: Replacements still do, once they amount to the whole collection, so tombstones get purged.
SNAPSHOT_RATIO_CHEAP_REPLAY = 2.0
SNAPSHOT_MIN_CHANGES = 1_000


@dataclass
class Change:
    """One generation's worth of changes; the defaults change nothing."""

    rows: list[NewRow] = field(default_factory=list)
    vectors: np.ndarray | None = None
    retire: list[int] = field(default_factory=list)
    force_snapshot: bool = False
    index: VectorIndex | None = None  # a replacement index (reindex, rebuild, compaction)
    index_kind: dict[str, Any] | None = None  # its {"kind", "params"} when the kind changes
    vector_files: VectorFiles | None = None  # a compaction's new epoch
    event: dict[str, Any] | None = None  # recorded in the manifest's history
    #: A tune or untune (engine.tune): the new ``Manifest.tune`` record, ``{}`` for none. It
    #: always comes with a replacement ``index`` built in that space.
    tune: dict[str, Any] | None = None
    keyword: dict[str, Any] | None = None  # a keyword index built for this generation
    #: A new ``Manifest.recall`` record: changed settings, or a measurement (engine/recall.py).
    recall: dict[str, Any] | None = None
    #: After `tune --full`: the rows' vectors from the tuned encoder, appended to ``tuned/``.
    tuned_vectors: np.ndarray | None = None


class Retiring(Protocol):
    """What a commit tells about the rows it retires (engine.blobs: their stored images)."""

    def named_by(self, ids: Sequence[int]) -> list[str]:
        """Under the write lock, before the rows are retired: what of theirs may go after."""
        ...

    def release(self, contents: list[str]) -> Any:
        """After the write lock is let go: the commits that retired them stand."""
        ...


class Writer:
    def __init__(self, folder: Path, store: Store, view: LiveView, lock_timeout: float) -> None:
        self.folder = folder
        self.store = store
        self.view = view
        self.lock_timeout = lock_timeout
        self._lock = FileLock(str(folder / "write.lock"), timeout=lock_timeout)
        # Threads of this process queue here; the file lock then orders processes.
        self._thread_lock = threading.Lock()
        self.vectors = VectorWriter(folder / "vectors", view.manifest.dim)
        self._tuned: VectorWriter | None = None
        self._upgraded = False
        #: The collection's stored images (engine.blobs), told what commits retired.
        self.blobs: Retiring | None = None
        self._released: list[str] = []

    @contextmanager
    def writing(self) -> Iterator[Manifest]:
        """Hold the write lock, undo whatever a killed writer left, yield the committed state."""
        if not self._thread_lock.acquire(timeout=self.lock_timeout):
            raise CollectionLocked(
                f"collection {self.folder.name!r} is being written by another thread "
                f"(waited {self.lock_timeout:g} s); try again when it finishes"
            )
        try:
            self._lock.acquire()
        except Timeout:
            self._thread_lock.release()
            raise CollectionLocked(
                f"collection {self.folder.name!r} is being written by another process "
                f"(waited {self.lock_timeout:g} s); try again when it finishes"
            ) from None
        try:
            m = self.view.refresh(reread=True)  # never trust the stamp for what is committed
            self._recover(m)
            yield m
        except BaseException:
            # A commit that failed part-way (disk full, a kill signal turned exception) may
            # have changed the in-memory index already: reload it from disk when next needed.
            self.view.drop_index()
            raise
        finally:
            released, self._released = self._released, []
            self._lock.release()
            self._thread_lock.release()
            if released and self.blobs is not None:
                # Never under the lock: the removal waits for uploads, which wait for it.
                self.blobs.release(released)

    @property
    def tuned(self) -> VectorWriter:
        """The tuned encoder's log (``tuned/``), made on first use: most collections never tune."""
        if self._tuned is None:
            self._tuned = VectorWriter(self.folder / TUNED_DIR, self.view.manifest.dim)
        return self._tuned

    def _recover(self, m: Manifest) -> None:
        if not self._upgraded:
            self.store.upgrade_indexes()  # collections made by older versions, once a process
            self._upgraded = True
        if self.store.max_generation() > m.generation:
            self.store.rollback_after(m.generation)
        self.vectors.truncate_uncommitted(m.vectors)
        keep = set()
        if m.snapshot_generation is not None:
            keep.add(snapshot_path(self.folder, m.snapshot_generation).name)
        if m.tune:
            keep.add(m.tune["head"])
            keep.add((m.tune.get("encoder") or {}).get("file", ""))
        for pattern in ("index-*.faiss", f"{HEAD_PREFIX}*", f"{TOP_PREFIX}*"):
            for path in self.folder.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        self.vectors.remove_epochs_before(m.vectors.epoch)
        tuned = tuned_files(m)
        if tuned is not None:
            self.tuned.truncate_uncommitted(tuned)
            self.tuned.remove_epochs_except(tuned.epoch)
        elif (self.folder / TUNED_DIR).is_dir():  # untuned, or a killed `tune --full` commit
            self.tuned.remove_epochs_except(None)

    def commit(self, m: Manifest, change: Change) -> Manifest:
        gen = m.generation + 1
        files = change.vector_files or m.vectors
        tune = change.tune
        if change.rows:
            files = self.vectors.append(files, change.vectors)
            tuned = tuned_files(m) if tune is None else None
            if tuned is not None:
                if change.tuned_vectors is None:
                    raise RuntimeError("an add to a `tune --full` collection needs tuned vectors")
                tuned = self.tuned.append(tuned, change.tuned_vectors)
                tune = {**m.tune, "vectors": asdict(tuned)}  # type: ignore[dict-item]
                change = replace(change, tune=tune)
        keyword = (change.keyword or m.keyword) is not None
        # Read before the write: a snapshot below purges the rows this commit retires.
        images = self.blobs.named_by(change.retire) if change.retire and self.blobs else []
        self.store.write(gen, change.rows, change.retire, keyword=keyword)
        if change.index is not None:
            # A replacement index is private until published: build and save it while
            # searches go on with the old one; only the switch itself takes the view's lock.
            new = self._publish(m, change, change.index, files, gen)
        else:
            # The shared index changes in place: no search may run meanwhile, and the commit
            # must be published before a reader could notice the manifest and replay it again.
            with self.view.lock.write():
                index = self.view.load_index()
                if change.retire:
                    index.remove(np.asarray(change.retire, dtype=np.int64))
                if change.rows:
                    ids = np.asarray([r.internal_id for r in change.rows], dtype=np.int64)
                    given = change.vectors if change.tuned_vectors is None else change.tuned_vectors
                    index.add(ids, self.view.to_index(given))
                new = self._publish(m, change, index, files, gen)
        self._released.extend(images)  # committed: their files may go once the lock is let go
        if new.snapshot_generation != m.snapshot_generation:
            if m.snapshot_generation is not None:
                snapshot_path(self.folder, m.snapshot_generation).unlink(missing_ok=True)
            self.store.purge_dead(new.snapshot_generation)
        return new

    def _publish(
        self, m: Manifest, change: Change, index: VectorIndex, files: VectorFiles, gen: int
    ) -> Manifest:
        """Snapshot the index if due, write the manifest (the commit) and adopt both."""
        count = m.count + len(change.rows) - len(change.retire)
        changes = m.changes_since_snapshot + len(change.rows) + len(change.retire)
        history = list(m.history)
        history.extend(_switch_events(m.index.get("state", {}), index.state()))
        if change.event:
            history.append({"at": time.time(), "generation": gen, **change.event})
        snapshot_gen, snapshot_crc = m.snapshot_generation, m.snapshot_crc32
        replaced = change.index is not None or change.vector_files is not None
        ratio = SNAPSHOT_RATIO_CHEAP_REPLAY if index.replay_is_cheap() else SNAPSHOT_RATIO
        tune = m.tune if change.tune is None else (change.tune or None)
        if replaced or change.force_snapshot or changes >= max(SNAPSHOT_MIN_CHANGES, ratio * count):
            snapshot_crc = self._save_snapshot(index, gen, share_vectors=not tune)
            snapshot_gen, changes = gen, 0
        # The generation whose commit built the index structure in force: a recall measured
        # on an older structure is stale (a replacement, or `auto`/`ivfpq` rebuilding in an add).
        mark = index.build_mark()
        built = m.index.get("built", 0)
        if replaced or mark != m.index.get("mark"):
            built = gen
        index_meta = {
            **m.index, **(change.index_kind or {}), "state": index.state(),
            "built": built, "mark": mark,
        }  # fmt: skip
        new = m.evolve(
            generation=gen,
            vectors=files,
            next_id=m.next_id + len(change.rows),
            count=count,
            snapshot_generation=snapshot_gen,
            snapshot_crc32=snapshot_crc,
            changes_since_snapshot=changes,
            index=index_meta,
            history=tuple(history),
            uuid=m.uuid or new_uuid(),
            tune=tune,
            keyword=change.keyword or m.keyword,
            recall=m.recall if change.recall is None else change.recall,
        )
        write_manifest(self.folder, new)  # the commit
        self.view.adopt(new, index)
        return new

    def _save_snapshot(self, index: VectorIndex, gen: int, share_vectors: bool) -> int:
        """Write ``index-<gen>.faiss`` atomically; returns its CRC-32 for the manifest.

        ``share_vectors``: the exact-vector log holds the index's vectors as they are (no tune
        head between them), so a graph kind leaves its copy out and takes it back from the log
        on load (:meth:`VectorIndex.save_sharing_vectors`). A tuned index holds head(vector),
        which the log does not: mapping 100,000 x 512 vectors through the head on every open
        costs more than reading them, so that second vector set stays in the snapshot.
        """
        path = snapshot_path(self.folder, gen)
        tmp = path.with_name(f".{path.name}.tmp")
        if share_vectors:
            index.save_sharing_vectors(tmp)
        else:
            index.save(tmp)
        crc = file_crc32(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return crc


def _switch_events(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Index kind switches that `auto` made during this commit, for the manifest's history."""
    before = len(old.get("switches", []))
    return [
        {"at": time.time(), "event": "auto-switch", **s} for s in new.get("switches", [])[before:]
    ]
