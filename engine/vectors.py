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

#: Bytes of tail rows covered by one chunk checksum: small enough that a replay of a few rows
#: checks little more than it reads (4 MiB: ~1.5 ms of CRC) and that repair knows which rows are
#: intact, large enough that the manifest holds few of them (489 for 1,000,000 x 512).
CHUNK_BYTES = 4 << 20


def chunk_rows_for(dim: int) -> int:
    return max(1, CHUNK_BYTES // (dim * 4))


def chunk_spans(files: VectorFiles) -> tuple[int, tuple[int, ...]]:
    """(rows a checksum covers, checksums) of the committed tail.

    A tail written before chunk checksums existed is one chunk: its whole-file CRC.
    """
    if files.chunk_rows:
        return files.chunk_rows, files.chunk_crc32
    return max(files.tail_rows, 1), (files.tail_crc32,) if files.tail_rows else ()


def extend_chunks(files: VectorFiles, data: memoryview, row_bytes: int) -> tuple[int, ...]:
    """The chunk checksums after appending ``data``: costs the appended bytes, nothing more."""
    size = files.chunk_rows * row_bytes
    crcs = list(files.chunk_crc32)
    pos = 0
    filled = files.tail_rows * row_bytes - (len(crcs) - 1) * size if crcs else size
    if filled < size:  # the last chunk is short: continue its CRC
        pos = min(size - filled, len(data))
        crcs[-1] = zlib.crc32(data[:pos], crcs[-1])
    while pos < len(data):
        crcs.append(zlib.crc32(data[pos : pos + size]))
        pos += size
    return tuple(crcs)


def damaged_tail_rows(folder: Path, dim: int, files: VectorFiles) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the committed tail that are missing or fail their checksum."""
    if not files.tail_rows:
        return []
    path = folder / f"tail-{files.epoch}.f32"
    if not path.exists():
        return [(0, files.tail_rows)]
    row_bytes = dim * 4
    rows, crcs = chunk_spans(files)
    bad: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        for i, crc in enumerate(crcs):
            start, end = i * rows, min((i + 1) * rows, files.tail_rows)
            data = f.read((end - start) * row_bytes)
            if len(data) < (end - start) * row_bytes or zlib.crc32(data) != crc:
                if bad and bad[-1][1] == start:
                    bad[-1] = (bad[-1][0], end)
                else:
                    bad.append((start, end))
    return bad


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
        self._checked_chunks: set[int] = set()
        self._base_checked = False

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

    def get_checked(self, ids: np.ndarray) -> np.ndarray:
        """:meth:`get`, after checking the checksums of the chunks those rows lie in.

        For replays and rebuilds, which put the vectors into an index that then serves them:
        a damaged row is refused here, naming the file, instead of being searched silently.
        Each chunk is checked once per committed state; searches use :meth:`get` unchecked.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = self.get(ids)
        rows = ids[ids >= self.files.tail_start] - self.files.tail_start
        if len(rows):
            size, crcs = chunk_spans(self.files)
            for chunk in np.unique(rows // size).tolist():
                if chunk not in self._checked_chunks:
                    self._check_chunk(chunk, size, crcs)
        if len(rows) < len(ids) and not self._base_checked:
            path = self.base_path(self.files.epoch)
            if file_crc32(path) != self.files.base_crc32:
                raise CorruptCollection(self._damage(path.name, "checksum mismatch"))
            self._base_checked = True
        return out

    def _check_chunk(self, chunk: int, size: int, crcs: tuple[int, ...]) -> None:
        row_bytes = self.dim * 4
        start, end = chunk * size, min((chunk + 1) * size, self.files.tail_rows)
        assert self._tail_map is not None
        data = memoryview(self._tail_map)[start * row_bytes : end * row_bytes]
        self._chunk_verdict(chunk, start, end, zlib.crc32(data) == crcs[chunk])

    def _chunk_verdict(self, chunk: int, start: int, end: int, intact: bool) -> None:
        if not intact:
            name = self.tail_path(self.files.epoch).name
            raise CorruptCollection(
                self._damage(name, f"checksum mismatch in rows {start}-{end - 1}")
            )
        self._checked_chunks.add(chunk)

    def read_into(self, ids: np.ndarray, out: np.ndarray) -> None:
        """Write the vectors of ``ids`` into the rows of ``out``, checked, without the map.

        For an index that takes its whole storage from the log on open (a graph snapshot saved
        without vectors): plain reads of whole checksum chunks, each checked before its rows
        are used, straight into ``out`` when a chunk's rows are all wanted in order (the usual
        case), through one chunk-sized buffer otherwise. Reading through the map instead
        (:meth:`get_checked`) held the mapped file resident beside the copy until released and
        copied every row twice: +390 MB peak and twice the open time at 100,000 x 512.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        in_tail = ids >= self.files.tail_start
        if not self.files.chunk_rows or not in_tail.all():
            self._read_mapped(ids, out)  # a compacted base, or a tail without chunk checksums
            return
        rows = ids - self.files.tail_start
        if len(rows) and rows.max() >= self.files.tail_rows:
            raise CorruptCollection(f"vector for id {int(ids.max())} is not stored")
        size, crcs = chunk_spans(self.files)
        row_bytes = self.dim * 4
        order = np.argsort(rows, kind="stable")
        chunk_of = rows[order] // size
        splits = np.flatnonzero(np.diff(chunk_of)) + 1
        buffer = None
        with open(self.tail_path(self.files.epoch), "rb", buffering=0) as f:
            for group in np.split(order, splits):
                chunk = int(rows[group[0]] // size)
                start, end = chunk * size, min((chunk + 1) * size, self.files.tail_rows)
                f.seek(start * row_bytes)
                first = int(group[0])
                whole = (
                    len(group) == end - start
                    and rows[first] == start
                    and (np.diff(group) == 1).all()
                    and (np.diff(rows[group]) == 1).all()
                )
                if whole:  # read in place: the rows land where the index wants them
                    target = out[first : first + len(group)]
                else:
                    if buffer is None:
                        buffer = np.empty((size, self.dim), np.float32)
                    target = buffer[: end - start]
                data = memoryview(target).cast("B")
                got = 0
                while got < len(data):
                    n = f.readinto(data[got:])
                    if not n:
                        break
                    got += n
                self._chunk_verdict(
                    chunk, start, end, got == len(data) and zlib.crc32(data) == crcs[chunk]
                )
                if not whole:
                    out[group] = target[rows[group] - start]

    def _read_mapped(self, ids: np.ndarray, out: np.ndarray, step: int = 65_536) -> None:
        for start in range(0, len(ids), step):
            out[start : start + step] = self.get_checked(ids[start : start + step])
        self.release()

    def _damage(self, name: str, what: str) -> str:
        return (
            f"exact vectors file {name} is damaged ({what}); "
            f"run `hubsearch repair {self.folder.parent.name}`"
        )

    def checked(self) -> CheckedLookup:
        """This file as a lookup whose reads are checked (for an index rebuild)."""
        return CheckedLookup(self)

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


class CheckedLookup:
    """A :class:`VectorFile` whose ``get`` checks checksums: what rebuilds read through."""

    def __init__(self, source: VectorFile) -> None:
        self.source = source
        self.dim = source.dim

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self.source.get_checked(ids)


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
        if not files.chunk_rows:
            files = self._add_chunk_checksums(files, path)
        created = not path.exists()
        with open(path, "ab") as f:
            if f.tell() != files.tail_rows * self.dim * 4:
                raise CorruptCollection(f"{path.name} has uncommitted rows; reopen to recover")
            data = memoryview(vectors).cast("B")  # written and checksummed without a copy
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if created:  # the new file's directory entry must be durable before a manifest names it
            fsync_dir(self.folder)
        return replace(
            files,
            tail_rows=files.tail_rows + len(vectors),
            tail_crc32=zlib.crc32(data, files.tail_crc32),
            chunk_crc32=extend_chunks(files, data, self.dim * 4),
        )

    def _add_chunk_checksums(self, files: VectorFiles, path: Path) -> VectorFiles:
        """A tail from a version without chunk checksums gets them, once, from its rows.

        The rows are checked against the whole-tail CRC on the way, so damage is never
        blessed with fresh checksums.
        """
        files = replace(files, chunk_rows=chunk_rows_for(self.dim), chunk_crc32=())
        if not files.tail_rows:
            return files
        need = files.tail_rows * self.dim * 4
        with open(path, "rb") as f:
            data = memoryview(f.read(need))
        if len(data) < need or zlib.crc32(data) != files.tail_crc32:
            raise CorruptCollection(
                f"exact vectors file {path.name} is damaged (checksum mismatch); "
                f"run `hubsearch repair {self.folder.parent.name}`"
            )
        empty = replace(files, tail_rows=0)
        return replace(files, chunk_crc32=extend_chunks(empty, data, self.dim * 4))

    def compact(self, source: VectorFile, live_ids: np.ndarray, next_id: int) -> VectorFiles:
        """Write a new epoch holding only ``live_ids``; the old epoch's files stay for readers."""
        return self.write_epoch(source.files.epoch + 1, live_ids, source.get_checked, next_id)

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
            chunk_rows=chunk_rows_for(self.dim),
        )

    def remove_epochs_except(self, epoch: int | None) -> None:
        """Every epoch's files but ``epoch``'s (None: all), for logs whose epochs are replaced
        whole rather than compacted in order (the tuned encoder's, engine.tune.space)."""
        for path in self.folder.iterdir():
            if epoch is None or _epoch_of(path) not in (epoch, None):
                path.unlink(missing_ok=True)

    def remove_epochs_before(self, epoch: int) -> None:
        for path in self.folder.iterdir():
            file_epoch = _epoch_of(path)
            if file_epoch is not None and file_epoch < epoch:
                path.unlink(missing_ok=True)


def _epoch_of(path: Path) -> int | None:
    """The epoch in ``tail-3.f32`` or ``base-3.ids.npy``; None for any other name."""
    try:
        return int(path.name.split(".")[0].rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None
