"""The exact vectors of a collection, kept once so no index change ever re-runs the encoder.

Layout under ``vectors/``: an append-only tail ``tail-<epoch>.f32`` whose row r holds id
``tail_start + r`` (ids are handed out in increasing order, so appends need no id column), and,
after a compaction, an immutable base ``base-<epoch>.ids.npy`` / ``base-<epoch>.f32.npy`` holding
the surviving vectors under their sorted ids. Ids never change, so indexes, store rows and
readers still on an older epoch stay valid across a compaction.

Rows past the manifest's ``tail_rows`` belong to an add that never committed; the writer
truncates them away, readers never look at them.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.errors import CorruptCollection
from engine.manifest import VectorFiles, file_crc32, fsync_dir


class VectorFile:
    """Read access to one committed state of the exact vectors (what a manifest names)."""

    def __init__(self, folder: Path, dim: int, files: VectorFiles) -> None:
        self.folder = folder
        self.dim = dim
        self.files = files
        self._tail_map: mmap.mmap | None = None
        self._base_ids = np.zeros(0, dtype=np.int64)
        self._base = np.zeros((0, dim), dtype=np.float32)
        if files.base_rows:
            try:
                self._base_ids = np.load(self.base_ids_path(files.epoch), mmap_mode="r")
                self._base = np.load(self.base_path(files.epoch), mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise CorruptCollection(
                    f"exact vectors base of epoch {files.epoch}: {exc}"
                ) from None
            if len(self._base_ids) != files.base_rows or self._base.shape != (files.base_rows, dim):
                raise CorruptCollection(
                    f"exact vectors base of epoch {files.epoch} has the wrong shape"
                )
        self._tail = self._map_tail()

    def tail_path(self, epoch: int) -> Path:
        return self.folder / f"tail-{epoch}.f32"

    def base_path(self, epoch: int) -> Path:
        return self.folder / f"base-{epoch}.f32.npy"

    def base_ids_path(self, epoch: int) -> Path:
        return self.folder / f"base-{epoch}.ids.npy"

    def _map_tail(self) -> np.ndarray:
        rows = self.files.tail_rows
        if rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        path = self.tail_path(self.files.epoch)
        need = rows * self.dim * 4
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptCollection(f"exact vectors file {path.name} is missing") from None
        if size < need:
            raise CorruptCollection(
                f"exact vectors file {path.name} holds {size // (self.dim * 4)} rows, "
                f"the manifest commits {rows}"
            )
        # A plain ndarray over the map: memmap's own __getitem__ costs more than the copy.
        with open(path, "rb") as f:
            self._tail_map = mmap.mmap(f.fileno(), need, access=mmap.ACCESS_READ)
        return np.frombuffer(self._tail_map, dtype=np.float32).reshape(rows, self.dim)

    def release(self) -> None:
        """Let go of the mapped pages this process has read (they stay in the page cache).

        A replay or a rebuild reads every vector once; mapped pages would otherwise count in
        the process's resident memory for as long as it runs, a second copy of the vectors
        beside the index (+228 MB in a 100,000 x 512 `flat` reader).
        """
        maps = [self._tail_map, getattr(self._base, "_mmap", None)]
        for m in maps:
            if m is not None and hasattr(m, "madvise"):
                m.madvise(mmap.MADV_DONTNEED)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of the given ids, in order. Unknown ids are a corruption, not a miss."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and ids.min() >= self.files.tail_start:  # the common case: no compaction yet
            rows = ids - self.files.tail_start
            if rows.max() >= self.files.tail_rows:
                raise CorruptCollection(f"vector for id {int(ids.max())} is not stored")
            return self._tail.take(rows, axis=0)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        in_tail = ids >= self.files.tail_start
        rows = ids[in_tail] - self.files.tail_start
        if len(rows) and (rows.max() >= self.files.tail_rows):
            raise CorruptCollection(f"vector for id {int(ids[in_tail].max())} is not stored")
        out[in_tail] = self._tail[rows]
        if (~in_tail).any():
            wanted = ids[~in_tail]
            pos = np.searchsorted(self._base_ids, wanted)
            pos_ok = np.minimum(pos, max(len(self._base_ids) - 1, 0))
            if len(self._base_ids) == 0 or (self._base_ids[pos_ok] != wanted).any():
                raise CorruptCollection("a vector referenced by the store is missing from the base")
            out[~in_tail] = self._base[pos]
        return out


class VectorWriter:
    """Append and compact; used only under the collection's write lock."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        folder.mkdir(parents=True, exist_ok=True)

    def truncate_uncommitted(self, files: VectorFiles) -> None:
        """Drop tail rows beyond what the manifest commits (a killed add's leftovers)."""
        path = self.folder / f"tail-{files.epoch}.f32"
        keep = files.tail_rows * self.dim * 4
        if path.exists() and path.stat().st_size > keep:
            with open(path, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())

    def append(self, files: VectorFiles, vectors: np.ndarray) -> VectorFiles:
        """Append durable rows; the returned VectorFiles commits them once a manifest names it."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        path = self.folder / f"tail-{files.epoch}.f32"
        with open(path, "ab") as f:
            if f.tell() != files.tail_rows * self.dim * 4:
                raise CorruptCollection(f"{path.name} has uncommitted rows; reopen to recover")
            data = memoryview(vectors).cast("B")  # written and checksummed without a copy
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return replace(
            files,
            tail_rows=files.tail_rows + len(vectors),
            tail_crc32=zlib.crc32(data, files.tail_crc32),
        )

    def compact(self, source: VectorFile, live_ids: np.ndarray, next_id: int) -> VectorFiles:
        """Write a new epoch holding only ``live_ids``; the old epoch's files stay for readers."""
        return self.write_epoch(source.files.epoch + 1, live_ids, source.get, next_id)

    def write_epoch(
        self,
        epoch: int,
        ids: np.ndarray,
        fetch: Callable[[np.ndarray], np.ndarray],
        next_id: int,
    ) -> VectorFiles:
        """A new epoch whose base holds ``fetch(ids)`` under the sorted ids, and an empty tail."""
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        base_ids = self.folder / f"base-{epoch}.ids.npy"
        base = self.folder / f"base-{epoch}.f32.npy"
        vectors = np.lib.format.open_memmap(
            base, mode="w+", dtype=np.float32, shape=(len(ids), self.dim)
        )
        for start in range(0, len(ids), 65536):
            chunk = ids[start : start + 65536]
            vectors[start : start + len(chunk)] = fetch(chunk)
        vectors.flush()
        del vectors
        np.save(base_ids, ids)
        for path in (base, base_ids):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        (self.folder / f"tail-{epoch}.f32").write_bytes(b"")
        fsync_dir(self.folder)
        return VectorFiles(
            epoch=epoch,
            base_rows=len(ids),
            tail_start=next_id,
            tail_rows=0,
            base_crc32=file_crc32(base),
        )

    def remove_epochs_before(self, epoch: int) -> None:
        for path in self.folder.iterdir():
            stem = path.name.split(".")[0]
            try:
                file_epoch = int(stem.rsplit("-", 1)[1])
            except (IndexError, ValueError):
                continue
            if file_epoch < epoch:
                path.unlink(missing_ok=True)
