"""One-file snapshots for index kinds that hold more than a single FAISS index.

`hnsw` keeps an id map and a deletion mask beside its graph, `ivfpq` its training facts and the
untrained buffer, `auto` a whole other index. :meth:`VectorIndex.save` writes exactly one path, so
these parts go into one file: the sections one after another (FAISS streams straight into the
file, without a second copy in memory), then a JSON footer naming each section's place, then the
footer's length and the magic again, so a truncated file is refused instead of half read.

A snapshot written with ``share_vectors`` (the engine's exact-vector log holds, by id, the very
vectors the index holds) may leave a FAISS index's flat storage out: the section records
``"storage": "skipped"`` and the reader hands back the index without it, for the kind to attach
from the log (see :meth:`indexes.hnsw.HnswIndex.attach_vectors`). An HNSW graph is then about a
tenth of the file it was at 512 dimensions, and the vectors are kept once on disk.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from engine.errors import CorruptCollection

MAGIC = b"HUBSIDX1"
_TAIL = struct.Struct("<Q8s")


class SnapshotWriter:
    """Appends named sections to an open file; names may be nested with :meth:`child`."""

    def __init__(
        self,
        file: BinaryIO,
        sections: dict[str, Any],
        prefix: str = "",
        share_vectors: bool = False,
    ) -> None:
        self._file = file
        self._sections = sections
        self._prefix = prefix
        #: Whether the caller keeps the indexed vectors by id elsewhere (the exact-vector log),
        #: so a kind may write its index without them.
        self.share_vectors = share_vectors

    def child(self, name: str) -> SnapshotWriter:
        prefix = f"{self._prefix}{name}/"
        return SnapshotWriter(self._file, self._sections, prefix, self.share_vectors)

    def _record(self, name: str, kind: str, start: int, **facts: Any) -> None:
        key = self._prefix + name
        if key in self._sections:
            raise ValueError(f"snapshot section {key!r} written twice")
        self._sections[key] = {"type": kind, "offset": start, "end": self._file.tell(), **facts}

    def array(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        start = self._file.tell()
        self._file.write(memoryview(array.reshape(-1).view(np.uint8)))
        self._record(name, "array", start, dtype=array.dtype.str, shape=list(array.shape))

    def faiss_index(self, name: str, index: Any, skip_storage: bool = False) -> None:
        """Stream ``index`` in; ``skip_storage`` leaves out the flat storage of a graph index."""
        import faiss

        start = self._file.tell()
        writer = faiss.PyCallbackIOWriter(self._file.write)
        if skip_storage:
            faiss.write_index(index, writer, faiss.IO_FLAG_SKIP_STORAGE)
            self._record(name, "faiss", start, storage="skipped")
        else:
            faiss.write_index(index, writer)
            self._record(name, "faiss", start)

    def vector_transform(self, name: str, transform: Any) -> None:
        import faiss

        start = self._file.tell()
        faiss.write_VectorTransform(transform, faiss.PyCallbackIOWriter(self._file.write))
        self._record(name, "transform", start)

    def file(self, name: str, path: Path) -> None:
        start = self._file.tell()
        with open(path, "rb") as source:
            shutil.copyfileobj(source, self._file, 1 << 20)
        self._record(name, "file", start)


class SnapshotReader:
    """Reads the sections of a snapshot by name; `meta` is what the writer returned."""

    def __init__(
        self, file: BinaryIO, path: Path, sections: dict[str, Any], meta: Any, prefix: str = ""
    ) -> None:
        self._file = file
        self._path = path
        self._sections = sections
        self.meta = meta
        self._prefix = prefix

    def child(self, name: str, meta: Any) -> SnapshotReader:
        prefix = f"{self._prefix}{name}/"
        return SnapshotReader(self._file, self._path, self._sections, meta, prefix)

    def has(self, name: str) -> bool:
        return self._prefix + name in self._sections

    def _seek(self, name: str, kind: str) -> dict[str, Any]:
        section = self._sections.get(self._prefix + name)
        if section is None or section["type"] != kind:
            raise CorruptCollection(f"index snapshot {self._path}: section {name!r} is missing")
        self._file.seek(section["offset"])
        return section

    def array(self, name: str) -> np.ndarray:
        section = self._seek(name, "array")
        array = np.empty(section["shape"], dtype=np.dtype(section["dtype"]))
        view = memoryview(array.reshape(-1).view(np.uint8))
        if self._file.readinto(view) != view.nbytes:
            raise CorruptCollection(f"index snapshot {self._path}: section {name!r} is truncated")
        return array

    def faiss_index(self, name: str) -> Any:
        """The index as written; one written without storage comes back without it."""
        import faiss

        self._seek(name, "faiss")
        reader = faiss.PyCallbackIOReader(self._file.read)
        if self.storage_skipped(name):
            return faiss.read_index(reader, faiss.IO_FLAG_SKIP_STORAGE)
        return faiss.read_index(reader)

    def storage_skipped(self, name: str) -> bool:
        """Whether section ``name`` holds a FAISS index written without its storage."""
        section = self._sections.get(self._prefix + name) or {}
        return section.get("storage") == "skipped"

    def vector_transform(self, name: str) -> Any:
        import faiss

        self._seek(name, "transform")
        return faiss.read_VectorTransform(faiss.PyCallbackIOReader(self._file.read))

    def file(self, name: str, dest: Path) -> None:
        section = self._seek(name, "file")
        remaining = section["end"] - section["offset"]
        with open(dest, "wb") as out:
            while remaining:
                chunk = self._file.read(min(remaining, 1 << 20))
                if not chunk:
                    raise CorruptCollection(f"index snapshot {self._path}: {name!r} is truncated")
                out.write(chunk)
                remaining -= len(chunk)


def write_snapshot(
    path: Path, kind: str, fill: Callable[[SnapshotWriter], Any], share_vectors: bool = False
) -> None:
    """Write ``path`` as a snapshot of ``kind``; ``fill`` writes sections and returns the meta.

    ``share_vectors``: the caller keeps the indexed vectors by id (see the module docstring).
    """
    sections: dict[str, Any] = {}
    with open(path, "wb") as file:
        file.write(MAGIC)
        meta = fill(SnapshotWriter(file, sections, share_vectors=share_vectors))
        footer = json.dumps({"kind": kind, "meta": meta, "sections": sections}).encode()
        file.write(footer)
        file.write(_TAIL.pack(len(footer), MAGIC))


@contextmanager
def open_snapshot(path: Path, kind: str) -> Iterator[SnapshotReader]:
    """Open a snapshot written by :func:`write_snapshot` for ``kind``; refuse anything else."""
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(len(MAGIC))
        size = file.seek(0, 2)
        if head != MAGIC or size < len(MAGIC) + _TAIL.size:
            raise CorruptCollection(f"index snapshot {path}: not a hubsearch index file")
        file.seek(size - _TAIL.size)
        length, magic = _TAIL.unpack(file.read(_TAIL.size))
        if magic != MAGIC or length > size - len(MAGIC) - _TAIL.size:
            raise CorruptCollection(f"index snapshot {path}: truncated (no footer)")
        file.seek(size - _TAIL.size - length)
        try:
            footer = json.loads(file.read(length))
        except ValueError as exc:
            raise CorruptCollection(f"index snapshot {path}: unreadable footer ({exc})") from None
        if footer.get("kind") != kind:
            raise CorruptCollection(
                f"index snapshot {path} holds kind {footer.get('kind')!r}, expected {kind!r}"
            )
        yield SnapshotReader(file, path, footer["sections"], footer["meta"])
