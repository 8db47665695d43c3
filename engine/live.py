"""A process's view of the committed state of a collection, kept current cheaply.

Both readers and the writer search through a :class:`LiveView`. On each refresh it compares the
manifest's inode and mtime with what it loaded; when a new generation is committed it replays
only the rows that changed since (from the store and the exact vectors) instead of reloading the
whole index, and reloads from the newest snapshot only when it has fallen behind one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import recall
from engine.errors import CollectionNotFound, CorruptCollection
from engine.locks import ReadWriteLock
from engine.manifest import (
    Identity,
    Manifest,
    file_crc32,
    indexable,
    manifest_stamp,
    read_manifest,
)
from engine.registry import Registry
from engine.store import Store
from engine.tune.head import Head, load_head, through
from engine.tune.space import TUNED_DIR, load_weights, tuned_files
from engine.vectors import VectorFile
from indexes.base import VectorIndex

RETRIES = 5
#: Seconds after which a view reads the manifest again even though its stamp did not change:
#: a stamp can repeat (see :meth:`LiveView.refresh`), and a reader must not serve an old
#: generation for longer than this because of it. One small JSON read a second.
RECHECK_S = 1.0
#: Vectors gathered per step of a replay (16,384 x 512 float32 = 32 MiB at a time).
REPLAY_CHUNK = 16_384


def snapshot_path(folder: Path, generation: int) -> Path:
    return folder / f"index-{generation}.faiss"


@dataclass(frozen=True)
class Served:
    """What one search reads: a committed generation and the index and vectors that hold it."""

    manifest: Manifest
    index: VectorIndex
    vectors: Any  # the exact vectors as the index holds them (through the head when tuned)
    head: Head | None = None  # a tuned generation's head: queries go through it too
    #: sha256 of a `tune --full` generation's encoder weights: its queries must be encoded
    #: through them (engine.tune.space), never through the base encoder's
    top: str | None = None


def space_key(m: Manifest) -> tuple[Any, ...]:
    """What decides the vectors an index holds: kind, params, snapshot, epochs, tuned space."""
    tune = m.tune or {}
    return (
        m.index["kind"],
        repr(m.index.get("params", {})),
        m.snapshot_generation,
        m.vectors.epoch,
        tune.get("sha256"),
        (tune.get("vectors") or {}).get("epoch"),
    )


class LiveView:
    """Shared by every thread of a process that uses one collection handle.

    The manifest, the vectors and the index change together, and only under the exclusive side
    of :attr:`lock`; searches hold the shared side (see :meth:`reading`), so they run in
    parallel and each one sees exactly one committed generation.
    """

    def __init__(self, folder: Path, store: Store, registry: Registry) -> None:
        self.folder = folder
        self.store = store
        self.registry = registry
        self.lock = ReadWriteLock()
        self.manifest: Manifest = read_manifest(folder)
        self.identity = Identity.of(self.manifest)
        self._stamp = manifest_stamp(folder)
        self._read_at = time.monotonic()
        self.vectors = VectorFile(folder / "vectors", self.manifest.dim, self.manifest.vectors)
        self.head: Head | None = self._head_for(self.manifest)
        self.tuned: VectorFile | None = None
        self.top: tuple[str, dict[str, Any]] | None = None
        self._space_for(self.manifest)
        self.index: VectorIndex | None = None
        self._index_gen = -1
        self._index_base: tuple[Any, ...] | None = None  # (kind, params, snapshot gen, epoch)

    def refresh(self, with_index: bool = False, reread: bool = False) -> Manifest:
        """Make manifest, vectors and (if loaded or asked for) the index match the newest commit.

        The stamp check is lock-free (one stat); catching up takes the exclusive lock and looks
        again, so a commit is replayed once however many threads noticed it.

        ``reread``: read the manifest even when the stamp has not changed. The writer asks for
        this under the collection lock: a stamp is (inode, mtime, size), ext4 hands the freed
        inode of the manifest before last straight to the next one, and on a filesystem with
        coarse timestamps two commits within a tick can look alike. A writer that believed such
        a stamp would take the older manifest for the committed state and roll the newer rows
        back as a killed writer's leftovers; a reader would serve the older generation, which
        the re-read every :data:`RECHECK_S` bounds.
        """
        if not reread and self._is_current(with_index):
            return self.manifest
        with self.lock.write():
            if reread:
                self._stamp = None
            for attempt in range(RETRIES):
                if self._is_current(with_index):
                    break
                try:
                    self._refresh_once(with_index)
                    break
                except (FileNotFoundError, CorruptCollection):
                    # A writer replaced a file between our reading the manifest and the file:
                    # read the manifest again. Persisting trouble is real corruption.
                    self._forget()
                    if attempt == RETRIES - 1:
                        raise
                except BaseException:
                    self._forget()  # a half-applied replay must never be searched
                    raise
            return self.manifest

    def _is_current(self, with_index: bool) -> bool:
        return (
            manifest_stamp(self.folder) == self._stamp
            and (self.index is not None or not with_index)
            and not self._recheck_due()
        )

    def _recheck_due(self) -> bool:
        return time.monotonic() - self._read_at >= RECHECK_S

    def _forget(self) -> None:
        self._stamp = None
        self.index = None

    @contextmanager
    def reading(self) -> Iterator[Served]:
        """The newest committed state, held still for the length of the ``with`` block."""
        while True:
            self.refresh(with_index=True)
            with self.lock.read():
                if self.index is not None:  # else a failed commit dropped it: load it again
                    top = None if self.top is None else self.top[0]
                    yield Served(self.manifest, self.index, self.index_vectors, self.head, top)
                    return

    def _refresh_once(self, with_index: bool) -> None:
        stamp = manifest_stamp(self.folder)
        if stamp is None:
            if not self.folder.is_dir():
                raise CollectionNotFound(
                    f"collection {self.folder.name!r} was dropped; open it again if it was "
                    f"re-created"
                )
            raise CorruptCollection(f"{self.folder / 'manifest.json'} is missing")
        if stamp != self._stamp or self._recheck_due():
            manifest = read_manifest(self.folder)
            self._read_at = time.monotonic()
            self.identity = self.identity.check(manifest, self.folder.name)
            if manifest.vectors != self.vectors.files:
                self.vectors = VectorFile(self.folder / "vectors", manifest.dim, manifest.vectors)
            self.head = self._head_for(manifest)
            self._space_for(manifest)
            self.manifest = manifest
        if self.index is not None or with_index:
            self._sync_index()
        self._stamp = stamp  # last: a failure above leaves the view marked stale

    @property
    def index_vectors(self) -> Any:
        """The exact vectors in the space the index holds (base or tuned ones, through the head)."""
        return self.space_vectors(self.vectors)

    def space_vectors(self, base: Any, tuned: Any = None) -> Any:
        """``base`` (the base log, or a compaction's new epoch of it) as the index holds it;
        ``tuned``: a compaction's new epoch of the tuned log, for a `tune --full` space."""
        if self.tuned is None:
            return through(base, self.head)
        return through(self.tuned if tuned is None else tuned, self.head)

    def to_index(self, vectors: Any) -> Any:
        """Encoder vectors (an add's, a query's) in the space the index holds: the base
        encoder's, or after `tune --full` the tuned encoder's."""
        return vectors if self.head is None else self.head.apply(vectors)

    def _head_for(self, manifest: Manifest) -> Head | None:
        if not manifest.tune:
            return None
        current = getattr(self, "head", None)
        if current is not None and current.sha256 == manifest.tune["sha256"]:
            return current
        return load_head(self.folder, manifest.tune)

    def _space_for(self, manifest: Manifest) -> None:
        """The tuned log and encoder weights of a `tune --full` generation (None otherwise)."""
        files = tuned_files(manifest)
        if files is None:
            self.tuned, self.top = None, None
            return
        if self.tuned is None or self.tuned.files != files:
            self.tuned = VectorFile(self.folder / TUNED_DIR, manifest.dim, files)
        record = manifest.tune["encoder"]  # type: ignore[index]
        if self.top is None or self.top[0] != record["sha256"]:
            self.top = (record["sha256"], load_weights(self.folder, record))

    def load_index(self) -> VectorIndex:
        index = self.index
        if index is None:
            self.refresh(with_index=True)
            index = self.index
        assert index is not None
        return index

    def reserve(self, extra: int) -> None:
        """Size the shared index for an add (a resize moves storage that searches read)."""
        with self.lock.write():
            self.load_index().reserve(extra)

    def _sync_index(self) -> None:
        m = self.manifest
        base = space_key(m)
        behind_snapshot = m.snapshot_generation is not None and self._index_gen < (
            m.snapshot_generation
        )
        if self.index is None or base != self._index_base or behind_snapshot:
            self.index = self._load_snapshot(m)
            self._index_gen = m.snapshot_generation or 0
            self._index_base = base
        if self._index_gen != m.generation:
            # Kinds that re-rank read the exact vectors through the lookup they were given:
            # it must be the file that holds the rows replayed now (a stale one raised "vector
            # for id N is not stored" in every `ivfpq` reader after the first append).
            self.index.attach_vectors(self.index_vectors)
            self.apply_delta(self._index_gen, m.generation)
            self._index_gen = m.generation
        recall.apply(self.index, m)  # the knobs the last measurement chose (cheap: attributes)

    def _load_snapshot(self, m: Manifest) -> VectorIndex:
        cls = self.registry.index_class(m.index["kind"])
        params = m.index.get("params", {})
        if m.snapshot_generation is None:
            index = cls(m.dim, **params)
        else:
            path = snapshot_path(self.folder, m.snapshot_generation)
            if not path.exists():
                raise CorruptCollection(
                    f"index snapshot {path.name} named by the manifest is missing; "
                    f"run `hubsearch repair {self.folder.name}`"
                )
            if m.snapshot_crc32 is not None and file_crc32(path) != m.snapshot_crc32:
                raise CorruptCollection(
                    f"index snapshot {path.name} is damaged (checksum mismatch); "
                    f"run `hubsearch repair {self.folder.name}`"
                )
            try:
                index = cls.load(path, m.dim, **params)
            except (RuntimeError, ValueError, OSError) as exc:
                raise CorruptCollection(
                    f"index snapshot {path.name} is unreadable ({exc}); "
                    f"run `hubsearch repair {self.folder.name}`"
                ) from None
        # A graph saved without its vectors (commit.Writer._save_snapshot) takes them from the
        # log here, through the log's chunk checksums: damage there is refused, naming the file.
        index.attach_vectors(self.index_vectors)
        return index

    def apply_delta(self, since: int, upto: int) -> None:
        assert self.index is not None
        added, removed = self.store.delta(since, upto)
        added = indexable(added, self.manifest)
        if len(removed):
            self.index.remove(removed)
        large = len(added) > REPLAY_CHUNK
        if large:
            self.index.reserve(len(added))
        for start in range(0, len(added), REPLAY_CHUNK):
            chunk = added[start : start + REPLAY_CHUNK]
            self.index.add(chunk, self.index_vectors.get_checked(chunk))
            if large:  # the index holds its own copy now: keep one chunk resident, not all
                self.vectors.release()

    def drop_index(self) -> None:
        with self.lock.write():
            self.index = None
            self._index_gen = -1

    def adopt(self, manifest: Manifest, index: VectorIndex) -> None:
        """The writer's own commit: take its manifest and in-memory index without reloading.

        Called under the exclusive lock, so no reader replays the commit the writer applied.
        """
        with self.lock.write():
            self.manifest = manifest
            self.identity = Identity.of(manifest)  # an older collection may just have got one
            self._stamp = manifest_stamp(self.folder)
            self._read_at = time.monotonic()
            if manifest.vectors != self.vectors.files:
                self.vectors = VectorFile(self.folder / "vectors", manifest.dim, manifest.vectors)
            self.head = self._head_for(manifest)
            self._space_for(manifest)
            index.attach_vectors(self.index_vectors)
            recall.apply(index, manifest)
            self.index = index
            self._index_gen = manifest.generation
            self._index_base = space_key(manifest)
