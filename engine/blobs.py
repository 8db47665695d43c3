"""A collection's own image files (``<collection>/blobs/<sha256>.<ext>``), kept while used.

The server stores each uploaded image there (content-addressed: the same bytes are one file,
which several documents may share) and adds the document with that path as its content. A file
is removed once no document row the store still keeps at the committed generation names it:
after a commit that retired image rows (a delete, a replacement), in `compact`, and by
`repair`; `verify` reports such orphans. Only files in this folder whose names are sha256
names are ever removed: images an embedded caller added from elsewhere are never touched.

Why a lock of its own, and why shared/exclusive: an upload writes (or finds) the file, then
encodes it and commits the add; a removal running in between would leave a live document whose
file is gone. So whoever is about to reference a blob (an upload, any add naming a blob path)
holds ``blobs.lock`` (beside ``write.lock``) *shared* from before the file is looked at until
its add has committed, and a removal holds it *exclusive* while it looks for references and
unlinks. Uploads therefore
still encode in parallel; only a removal waits for them (and they for it, briefly). Each hold
is its own open file description, so `flock` orders threads of one process as it orders
processes. Removals never hold the collection's write lock while they wait, so the two locks
cannot deadlock: they run after the writer let go.

Crash safety: files are written (fsynced) before the add commits and unlinked only after the
commit that retired their last row, so a kill leaves at worst an orphan file, never a live
document without its file; the next `compact` or `repair` removes the orphan.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from engine.errors import CollectionLocked
from engine.manifest import fsync_dir, read_manifest, write_atomic
from engine.store import Store

BLOBS = "blobs"
BLOB_NAME = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,5}")
LOCK = "blobs.lock"  # beside write.lock: the blob folder holds nothing but images
#: Candidate names a removal looks up by their endings; more read every image row's path.
FEW = 64
#: How often a waiting hold tries the lock again (flock has no timeout of its own).
POLL_S = 0.01


def blob_name(data: bytes, ext: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def named_blob(content: str) -> str | None:
    """The blob file name a document's content refers to, or None if it names no blob.

    Decided by name alone (``.../blobs/<sha256>.<ext>``), not by this collection's absolute
    path: a collection restored or moved elsewhere keeps rows naming its old path, and those
    rows must still keep their files. A hash name is the bytes themselves, so a row naming
    another folder's blob of the same name keeps ours too, which only errs on keeping.
    """
    head, name = os.path.split(content)
    if BLOB_NAME.fullmatch(name) and os.path.basename(head) == BLOBS:
        return name
    return None


def store_blob(folder: Path, data: bytes, ext: str) -> Path:
    """Write ``data`` under its hash (temp file, fsync, rename); an existing copy is kept.

    Call it holding :meth:`Blobs.using`, until the add naming the file has committed.
    """
    blobs = folder / BLOBS
    path = blobs / blob_name(data, ext)
    if path.exists():
        return path
    if not blobs.is_dir():
        blobs.mkdir(exist_ok=True)
        fsync_dir(folder)
    write_atomic(path, data)  # temp, fsync, rename, fsync the folder
    return path


def listed(names: list[str], n: int = 3) -> str:
    """The first few names, for a message."""
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


class Blobs:
    """One collection's blob folder: the lock, and the removal of files no row uses."""

    def __init__(self, folder: Path, store: Store, lock_timeout: float) -> None:
        self.folder = folder
        self.dir = folder / BLOBS
        self.store = store
        self.lock_timeout = lock_timeout
        self._local = threading.local()  # per thread: shared holds, removals put off

    # -- the lock ---------------------------------------------------------------------------

    @contextmanager
    def using(self, contents: Iterable[str] | None = None) -> Iterator[None]:
        """Hold the lock shared while blobs are written or named, until their add commits.

        With ``contents``, only if one of them names a blob (other adds take no lock). Nests
        within a thread; removals released meanwhile by this thread run when the outermost
        hold ends (an exclusive hold would wait for this very thread's shared one).
        """
        if contents is not None and not any(named_blob(c) for c in contents):
            yield
            return
        local = self._local
        depth = getattr(local, "depth", 0)
        fd = self._hold(fcntl.LOCK_SH) if depth == 0 else None
        local.depth = depth + 1
        try:
            yield
        finally:
            local.depth = depth
            if fd is not None:
                os.close(fd)
                pending = getattr(local, "pending", set())
                local.pending = set()
                if pending:
                    self.release(pending)

    def _hold(self, mode: int) -> int:
        """An open descriptor of ``blobs.lock`` holding ``mode``; close it to let go.

        `flock` (POSIX) has no timeout of its own: non-blocking tries until the deadline.
        """
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                busy = exc.errno in (errno.EAGAIN, errno.EACCES)
                if not busy or time.monotonic() > deadline:
                    os.close(fd)
                    if not busy:
                        raise
                    raise CollectionLocked(
                        f"the image files of collection {self.folder.name!r} are being "
                        f"changed (waited {self.lock_timeout:g} s); try again when it finishes"
                    ) from None
            time.sleep(POLL_S)

    # -- removal ----------------------------------------------------------------------------

    def named_by(self, ids: Sequence[int]) -> list[str]:
        """Contents naming blobs among rows about to be retired (`Writer.commit`'s hook).

        Without a blob folder nothing can be removed, so nothing is read: a text collection's
        replacing add of 20,000 rows spent 11% of its time reading these contents.
        """
        if not self.dir.is_dir():
            return []
        return [c for c in self.store.image_contents_of(ids) if named_blob(c)]

    def release(self, contents: Iterable[str]) -> list[str]:
        """After a commit retired rows with these contents: remove blobs no row uses now.

        Best effort: the commit stands whatever happens here, and a file left behind is an
        orphan for the next `compact` or `repair`. Returns the names removed.
        """
        contents = [c for c in contents if named_blob(c)]
        if not contents or not self.dir.is_dir():
            return []
        if getattr(self._local, "depth", 0):
            self._local.pending = getattr(self._local, "pending", set()) | set(contents)
            return []
        names = {n for n in map(named_blob, contents) if n is not None}
        try:
            return self._remove(names)
        except (CollectionLocked, OSError):  # busy past the timeout; dropped; a disk error
            return []

    def sweep(self) -> list[str]:
        """Remove every orphan (and temp files of killed uploads); returns the names removed."""
        if not self.dir.is_dir():
            return []
        return self._remove(None)

    def orphans(self) -> list[str]:
        """Blob files no row uses (checked under the lock, so an upload in flight is none)."""
        if not self.dir.is_dir():
            return []
        fd = self._hold(fcntl.LOCK_EX)
        try:
            return sorted(set(self._files()) - self._referenced(None))
        finally:
            os.close(fd)

    def missing(self) -> list[str]:
        """Contents of live documents naming a file in this folder that is not there."""
        gen = read_manifest(self.folder).generation
        prefix = os.path.abspath(self.dir) + os.sep
        return sorted(
            c
            for c in self.store.image_contents(gen, live_only=True)
            if c.startswith(prefix) and named_blob(c) and not os.path.exists(c)
        )

    def _remove(self, names: set[str] | None) -> list[str]:
        fd = self._hold(fcntl.LOCK_EX)
        try:
            if names is None:  # all, and killed uploads' temp files: none is being written now
                doomed = set(self._files()) - self._referenced(None)
                doomed |= {p.name for p in self.dir.glob(".*.tmp")}
            else:
                doomed = {n for n in names if (self.dir / n).exists()}
                doomed -= self._referenced(doomed) if doomed else set()
            for name in sorted(doomed):
                (self.dir / name).unlink(missing_ok=True)
            if doomed:
                fsync_dir(self.dir)
            return sorted(n for n in doomed if not n.startswith("."))
        finally:
            os.close(fd)

    def _files(self) -> list[str]:
        return [n for n in os.listdir(self.dir) if BLOB_NAME.fullmatch(n)]

    def _referenced(self, names: set[str] | None) -> set[str]:
        """Blob names (among ``names``, or all) of rows the store keeps past the committed
        generation.

        The generation is read first: a writer committing meanwhile only makes more rows count
        (rows it retires are retired after it), never fewer. Rows of an uncommitted add count
        too; no add naming a blob is in flight while the exclusive lock is held. A few names
        are asked for by their endings: reading every image row's path into Python cost 1.1 s
        of a one-document delete at 100,000 images.
        """
        gen = read_manifest(self.folder).generation
        endings = None
        if names is not None and len(names) <= FEW:
            endings = [f"{os.sep}{BLOBS}{os.sep}{n}" for n in sorted(names)]
        contents = self.store.image_contents(gen, endings=endings)
        return {n for n in map(named_blob, contents) if n is not None}
