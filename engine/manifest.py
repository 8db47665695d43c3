"""The manifest: the single commit point of a collection.

A collection's files (store rows, exact vectors, index snapshots) are written first and become
visible only when a new manifest naming them replaces the old one with an atomic rename. Readers
trust nothing beyond the generation the manifest names, and a writer that finds anything newer
on disk rolls it back.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import CollectionNotFound, CorruptCollection

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class VectorFiles:
    """Where the exact vectors live: an optional sorted base (after compaction) plus a tail."""

    epoch: int = 0
    base_rows: int = 0
    tail_start: int = 0
    tail_rows: int = 0
    #: CRC-32 of the committed tail bytes (extended on each append) and of the base vectors:
    #: a flipped byte in the exact vectors is found by `verify`, never served silently.
    tail_crc32: int = 0
    base_crc32: int = 0
    #: CRC-32 of each run of ``chunk_rows`` tail rows (the last run may be shorter), extended
    #: on each append. A replay or rebuild checks the runs it reads, so a damaged row is refused
    #: where it would be served, at the cost of the rows it reads anyway; repair learns which
    #: rows are intact. ``chunk_rows == 0``: written by a version without them (the whole-tail
    #: CRC is then the only check); the next append adds them.
    chunk_rows: int = 0
    chunk_crc32: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_crc32", tuple(self.chunk_crc32))  # JSON gives a list


@dataclass(frozen=True)
class Manifest:
    name: str
    encoder: dict[str, Any]  # {"name", "options", "fingerprint"}
    index: dict[str, Any]  # {"kind", "params", "state"}
    store_url: str | None = None
    generation: int = 0
    snapshot_generation: int | None = None  # the index file index-<g>.faiss, if any
    snapshot_crc32: int | None = None  # checked on every load of that file
    vectors: VectorFiles = field(default_factory=VectorFiles)
    next_id: int = 0
    count: int = 0
    changes_since_snapshot: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    history: tuple[dict[str, Any], ...] = ()
    #: Internal ids of documents still in the store whose vectors repair could not restore
    #: (neither from an index snapshot nor by re-encoding their content). They are kept out of
    #: the index, `verify` keeps naming them, and `repair --drop-unrecoverable` removes them:
    #: deleting a caller's documents is the caller's decision.
    unrecoverable: tuple[int, ...] = ()
    format: int = FORMAT_VERSION
    #: Tells this collection from one dropped and re-created under the same name. Collections
    #: made before it existed get one at their next write (until then `created` stands in).
    uuid: str | None = None
    #: A tuned collection's head (engine.tune): {"head": file, "sha256", "threshold", ...}.
    #: None: the base encoder's space. Older manifests have no such key and are untuned.
    tune: dict[str, Any] | None = None
    #: The keyword index (``{"version": 1}``) kept in the store beside the documents, or None:
    #: collections made before it existed search by vector until `reindex --keyword` builds it.
    keyword: dict[str, Any] | None = None
    #: The recall promise (engine/recall.py): settings (``target``, ``sample``, ``growth``;
    #: absent ones take the defaults) and ``measured``, the last measurement of the index.
    recall: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrecoverable", tuple(int(i) for i in self.unrecoverable))

    @property
    def dim(self) -> int:
        return int(self.encoder["fingerprint"]["dim"])

    @property
    def space(self) -> dict[str, Any]:
        """The fingerprint of the space the index holds: the encoder's, plus the head if tuned."""
        fingerprint = dict(self.encoder["fingerprint"])
        if self.tune:
            fingerprint["head"] = self.tune["sha256"]
            if self.tune.get("encoder"):  # `tune --full`: the encoder's tuned top weights
                fingerprint["tuned_top"] = self.tune["encoder"]["sha256"]
        return fingerprint

    def evolve(self, **changes: Any) -> Manifest:
        return replace(self, updated=time.time(), **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["history"] = list(self.history)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST) -> Manifest:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise CorruptCollection(f"{where} is unreadable: not a JSON object")
            if data.get("format") != FORMAT_VERSION:
                raise CorruptCollection(
                    f"{where}: format {data.get('format')!r} is not supported "
                    f"(this hubsearch reads format {FORMAT_VERSION})"
                )
            problem = _shape_problem(data)
            if problem:
                raise CorruptCollection(f"{where} is unreadable: {problem}")
            data["vectors"] = VectorFiles(**data["vectors"])
            data["history"] = tuple(data.get("history", ()))
            return cls(**data)
        except CorruptCollection:
            raise
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise CorruptCollection(f"{where} is unreadable: {exc}") from None


def new_uuid() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Identity:
    """Which collection a handle opened: a handle must never serve a successor's files."""

    uuid: str | None
    created: float

    @classmethod
    def of(cls, manifest: Manifest) -> Identity:
        return cls(manifest.uuid, manifest.created)

    def check(self, manifest: Manifest, name: str) -> Identity:
        """The identity to keep after reading ``manifest``; another collection is NotFound."""
        same = (
            manifest.uuid == self.uuid
            if self.uuid is not None
            else manifest.created == self.created
        )
        if not same:
            raise CollectionNotFound(
                f"collection {name!r} was dropped and created anew since this handle was "
                f"opened; open it again"
            )
        return Identity.of(manifest)


def indexable(ids: Any, manifest: Manifest) -> Any:
    """``ids`` (a sorted int64 array of live ids) without those whose vectors are lost."""
    if not manifest.unrecoverable:
        return ids
    import numpy as np

    return ids[~np.isin(ids, np.asarray(manifest.unrecoverable, dtype=np.int64))]


#: Counters and offsets: a wrong type or a negative value would surface far from the manifest
#: (a negative ``tail_rows`` was an OverflowError in numpy), so they are checked on reading.
_COUNTS = ("generation", "next_id", "count", "changes_since_snapshot")
_U32 = 2**32


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the structure and field types of a parsed manifest, or None."""
    for key, kind in (("name", str), ("encoder", dict), ("index", dict), ("vectors", dict)):
        if not isinstance(data.get(key), kind):
            return f"{key!r} is missing or not {'a string' if kind is str else 'an object'}"
    fingerprint = data["encoder"].get("fingerprint")
    if not isinstance(data["encoder"].get("name"), str) or not isinstance(fingerprint, dict):
        return "'encoder' lacks its name or fingerprint"
    if not _count(fingerprint.get("dim")) or not fingerprint["dim"]:
        return "the encoder's dim is not a positive integer"
    if not isinstance(data["index"].get("kind"), str):
        return "'index' lacks its kind"
    for key in ("store_url", "uuid"):
        if not isinstance(data.get(key), (str, type(None))):
            return f"{key!r} is not a string"
    for key in ("keyword", "recall"):
        if not isinstance(data.get(key), (dict, type(None))):
            return f"{key!r} is not an object"
    if not isinstance(data.get("history", []), list):
        return "'history' is not a list"
    for key in _COUNTS:
        if key in data and not _count(data[key]):
            return f"{key!r} is {data[key]!r}, not a non-negative integer"
    for key in ("snapshot_generation", "snapshot_crc32"):
        if data.get(key) is not None and not _count(data[key], key.endswith("crc32")):
            return f"{key!r} is {data[key]!r}, not a non-negative integer"
    for key, value in data["vectors"].items():
        default = getattr(VectorFiles, key, None)
        if isinstance(default, int) and not _count(value, key.endswith("crc32")):
            return f"vectors {key!r} is {value!r}, not a non-negative integer"
    return None


def _count(value: Any, crc: bool = False) -> bool:
    """A non-negative int (not a bool), below 2**32 for a CRC-32."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return ok and (not crc or value < _U32)


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorruptCollection(f"{path} is missing") from None
    return Manifest.from_json(text, str(path))


def write_atomic(path: Path, data: bytes) -> None:
    """Write-temp, fsync, rename, fsync the folder: the file is either old or new, never torn."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_atomic(folder / MANIFEST, manifest.to_json().encode("utf-8"))


def file_crc32(path: Path, limit: int | None = None) -> int:
    """CRC-32 of a file (or of its first ``limit`` bytes), read into one reused 1 MiB buffer."""
    crc, left = 0, limit
    buffer = memoryview(bytearray(1 << 20))
    with open(path, "rb") as f:
        while left is None or left > 0:
            got = f.readinto(buffer if left is None else buffer[: min(len(buffer), left)])
            if not got:
                break
            crc = zlib.crc32(buffer[:got], crc)
            if left is not None:
                left -= got
    return crc


def manifest_stamp(folder: Path) -> tuple[int, int, int] | None:
    """A cheap change detector: the rename gives every new manifest a new inode."""
    try:
        st = os.stat(folder / MANIFEST)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
