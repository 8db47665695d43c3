"""Encode on a Ray cluster, commit here: ``Collection.add_dataset`` and ``hubsearch add --ray``.

The collection keeps one writer and crash-safe commits; only encoding is spread. The driver
(this process) first checks every row and refuses duplicate ids before anything is written
(files are read here, as ``hubsearch add`` reads them; a ``ray.data.Dataset`` streams through
here). Then Ray streams the rows through a pool of encoder actors (``map_batches``, one CPU or
GPU each) and the encoded batches back to the driver, which commits them through the normal
writer a chunk at a time. Ray Data bounds what is in flight (backpressure), so memory here does
not grow with the dataset.

Resuming: before encoding a batch an actor asks the ledger (an actor on the driver's machine,
which can read the collection's store) which rows are already stored with the same content
hash, and skips them, so re-running an interrupted add re-encodes only what was not committed.
Rows are hashed as an in-process add hashes them, so both kinds of add see each other's rows
as unchanged.

Actors never read the driver's disk: input files are read by tasks pinned to the driver's
machine, and the encoder is rebuilt on each actor from its name and options, every option
naming a local file or folder (the plugin's ``external_options``: a SavedModel ``handle=``, a
``towers=`` folder) packed into Ray's object store and unpacked into a temporary folder there.
The actor then checks that its encoder's fingerprint is the collection's, so an actor with
other weights cannot write into this embedding space.

Nothing in the core imports this module or Ray; ``Collection.add_dataset`` imports it.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.collection import COMMIT_EVERY, AddReport, check_same_fingerprint
from engine.documents import canonical_metadata, check_metadata, content_hash
from engine.encoders import IMAGE, TEXT
from engine.errors import BadInput, HubsearchError, SpaceMismatch
from engine.image_folders import image_files, image_ids, sidecar_metadata
from engine.images import IMAGE_EXTENSIONS
from engine.ingest import (
    PARQUET_SUFFIXES,
    Fields,
    IdSet,
    Row,
    is_parquet,
    iter_rows,
    parquet_row_groups,
    plain_record,
    to_row,
)
from engine.ingest import iter_records as iter_file_records
from engine.streamed import check_all

INSTALL = "pip install 'hubsearch[ray]'"
_REMOTE_ERROR = re.compile(r"engine\.errors\.(\w+): ([^\n]+)")
#: Rows per batch read by the checking pass (driver) and handed to an encoder actor.
READ_BATCH = 1024
#: Images per batch read and handed to an encoder actor (their bytes travel through Ray).
IMAGE_BATCH = 32
#: Bytes per Ray Data block (see ``_small_blocks``).
BLOCK_BYTES = 1 << 20
READABLE = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", *PARQUET_SUFFIXES}


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # the extra is ray[data]; plain ray lacks it
    except ImportError:
        raise BadInput(f"encoding on a Ray cluster needs Ray: {INSTALL}") from None
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at ``address`` ("auto": the running one), or start a local one.

    Quiet: Ray's progress lines and its workers' logs would bury the command's output.
    """
    import logging

    ray = import_ray()
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


#: What a source holds: rows of JSONL/CSV/Parquet files, a user's dataset, image files.
RECORDS, DATASET, IMAGES = "records", "dataset", "images"


class Item(NamedTuple):
    """One row as an actor encodes it: ``content`` is the text, or the image's path on the
    driver (what an in-process add stores and hashes); ``payload`` the text or the image's
    bytes; ``error`` why an image cannot be taken (reported and skipped, as in process)."""

    id: str
    modality: str
    content: str
    metadata: str  # canonical JSON
    payload: Any
    error: str = ""


@dataclass(frozen=True)
class Source:
    """Rows for the cluster: files read by ``hubsearch add``'s own readers, or a user's dataset.

    Files are read in parts (a file, or a Parquet row group) by Ray tasks running the same
    readers as ``hubsearch add``, so a row parses to the same record (CSV cells typed the same,
    JSONL keys absent rather than null as Arrow's JSON reader would make them) and carries its
    ``file:line`` position: messages name it and rows without an id get it as their id. A
    user's ``ray.data.Dataset`` has no such position: its rows need an id field. Images are
    read as bytes on the driver's machine and decoded on the actor by ``engine.images`` (its
    limits and messages); ids and metadata are fixed here, as ``hubsearch add`` fixes them.
    """

    dataset: Any
    kind: str
    paths: tuple[Path, ...] = ()

    @property
    def batch_rows(self) -> int:
        """Rows per batch an actor gets: fewer images than texts, whose bytes are larger."""
        return IMAGE_BATCH if self.kind == IMAGES else READ_BATCH

    def items(self, batch: Any, fields: Fields) -> list[Item]:
        if self.kind == IMAGES:
            return [
                Item(r["id"], IMAGE, r["path"], r["metadata"], r["data"], r["error"])
                for r in batch.to_pylist()
            ]
        return [
            Item(row.id, TEXT, row.text, canonical_metadata(row.metadata, row.where)[1], row.text)
            for row in self.rows(batch, fields)
        ]

    def rows(self, batch: Any, fields: Fields, first: int = 1) -> Iterator[Row]:
        """Checked rows of one batch; ``first`` numbers a dataset's rows in messages."""
        for n, raw in enumerate(batch.to_pylist(), first):
            if self.kind == RECORDS:
                yield to_row(raw["source"], raw["line"], json.loads(raw["record"]), fields)
                continue
            record = plain_record(raw)
            row = to_row("dataset", n, record, fields)
            if fields.id is None and record.get("id") is None:
                raise BadInput(
                    f"{row.where}: no 'id' field: rows of a Ray dataset need ids from the data "
                    f"(id=FIELD); only files give rows a FILE:LINE position to stand in"
                )
            yield row


def open_source(data: Any, readers: int = 2, sidecar: Path | None = None) -> Source:
    """A ``ray.data.Dataset``; the path of a file or folder of JSONL, CSV or Parquet; or image
    files (a folder of them, one image, a glob), as ``hubsearch add`` takes them."""
    ray = import_ray()
    if isinstance(data, ray.data.Dataset):
        return Source(data, DATASET)
    text = os.fspath(data)
    path = Path(text)
    if glob.has_magic(text) and not path.exists():
        return _image_source(ray, [text], readers, sidecar)
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        if path.is_dir()
        else [path]
    )
    if not any(f.suffix.lower() in READABLE for f in files) and any(
        f.suffix.lower() in IMAGE_EXTENSIONS for f in files
    ):
        return _image_source(ray, [text], readers, sidecar)
    parts: list[dict[str, Any]] = []
    for f in files:
        if f.suffix.lower() not in READABLE:
            raise BadInput(
                f"{f}: add_dataset reads JSONL, CSV and Parquet files, or images (a folder of "
                f"nothing else), not {f.suffix!r}"
            )
        groups = range(len(parquet_row_groups(f))) if is_parquet(f) else [-1]
        parts.extend({"path": str(f.resolve()), "group": g} for g in groups)
    if not parts:
        raise BadInput(f"{path}: no JSONL, CSV, Parquet or image files in it")
    return Source(_read_here(ray, parts, read_parts, 1, readers), RECORDS, tuple(files))


def _read_here(ray: Any, parts: list[dict[str, Any]], reader: Any, batch: int, size: int) -> Any:
    """A dataset of what ``reader`` makes of ``parts``, read by tasks on this machine.

    Readers run where the files are (this machine; Ray ships the rows to the actors) and
    take no CPU slot: with one actor per CPU they would otherwise wait for ever for a slot
    the actors hold (Ray Data's own read_parquet listed files in a 1-CPU task, and a
    2-CPU cluster running 2 actors never read a row).
    """
    return ray.data.from_items(parts).map_batches(
        reader,
        batch_size=batch,
        batch_format="pyarrow",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=size),
        label_selector=here(ray),
    )


def _image_source(ray: Any, args: list[str], readers: int, sidecar: Path | None) -> Source:
    """Image files with the ids and metadata an in-process ``hubsearch add`` gives them."""
    files = image_files(args)
    ids = image_ids(files, args)
    metadata = sidecar_metadata(sidecar, files, ids) if sidecar else None
    parts = [
        {"id": i, "path": str(f), "metadata": meta}
        for i, f, (_, meta) in zip(ids, files, check_metadata(metadata, len(ids), ids), strict=True)
    ]
    dataset = _read_here(ray, parts, read_images, IMAGE_BATCH, readers)
    return Source(dataset, IMAGES, tuple(files))


def read_images(batch: Any) -> dict[str, np.ndarray]:
    """The bytes of a batch of image files; a file that cannot be read carries the reason
    ``hubsearch add`` gives for it, and is reported and skipped like an undecodable one."""
    from engine.images import open_image_file

    rows = batch.to_pylist()
    data: list[bytes] = []
    errors: list[str] = []
    for row in rows:
        path = Path(row["path"])
        try:
            with open_image_file(path, row["path"]) as f:
                data.append(f.read())
            errors.append("")
        except BadInput as exc:
            data.append(b"")
            errors.append(str(exc).removeprefix(f"{path}: "))
    column = {k: np.array([r[k] for r in rows], dtype=object) for k in ("id", "path", "metadata")}
    return {
        **column,
        "data": np.array(data, dtype=object),
        "error": np.array(errors, dtype=object),
    }


def read_parts(parts: Any) -> Iterator[dict[str, np.ndarray]]:
    """Records of files or row groups, ``READ_BATCH`` at a time, as ``hubsearch add`` reads them."""
    for part in parts.to_pylist():
        path = Path(part["path"])
        group = None if part["group"] < 0 else part["group"]
        batch: list[tuple[int, dict[str, Any]]] = []
        for item in iter_file_records(path, group):
            batch.append(item)
            if len(batch) == READ_BATCH:
                yield _record_batch(path.name, batch)
                batch = []
        if batch:
            yield _record_batch(path.name, batch)


def _record_batch(name: str, batch: list[tuple[int, dict[str, Any]]]) -> dict[str, np.ndarray]:
    return {
        "source": np.array([name] * len(batch), dtype=object),
        "line": np.array([line for line, _ in batch], dtype=np.int64),
        "record": np.array([json.dumps(rec, ensure_ascii=False) for _, rec in batch], dtype=object),
    }


def add_dataset(
    col: Any,
    data: Any,
    *,
    text: str = "text",
    id: str | None = None,  # the public keyword mirrors --id-field
    metadata: list[str] | tuple[str, ...] | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0,
    batch_size: int | None = None,
    chunk: int = COMMIT_EVERY,
    sidecar: str | os.PathLike[str] | None = None,
    timings: dict[str, float] | None = None,
) -> AddReport:
    """See ``Collection.add_dataset``. ``sidecar``: image metadata keyed by file name, as
    ``hubsearch add --sidecar`` reads it. ``timings``, when given, receives the seconds of each
    phase (``check``, ``first_batch``: actor start-up until the first encoded batch is back,
    ``encode``: the whole encoding and committing pass), which benchmarks report apart."""
    ray = import_ray()
    if actors < 1:
        raise BadInput(f"actors must be at least 1, got {actors}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    fields = Fields(id=id, text=text, meta=tuple(metadata or ()))
    timings = {} if timings is None else timings
    with _small_blocks(ray):
        source = open_source(
            data, readers=max(1, actors), sidecar=Path(sidecar) if sidecar else None
        )
        started = time.perf_counter()
        check_rows(source, fields)
        timings["check"] = time.perf_counter() - started
        return _encode_and_commit(
            col, source, fields, (actors, gpus_per_actor), batch_size, chunk, timings
        )


@contextmanager
def _small_blocks(ray: Any) -> Iterator[None]:
    """Ray Data settings for this add (a dataset seals the context it was made in).

    Blocks of about a megabyte instead of Ray's 128 MiB: a map task sends its output when a
    block is full, so with large blocks the driver got nothing until an actor had encoded
    tens of thousands of rows (a 20,000-row add came back in one piece at the end) and could
    commit nothing meanwhile. Order is kept so that a dataset's rows are numbered the same in
    every pass.
    """
    context = ray.data.DataContext.get_current()
    kept = (
        context.execution_options.preserve_order,
        context.target_max_block_size,
        context.target_min_block_size,
    )
    context.execution_options.preserve_order = True
    context.target_max_block_size = BLOCK_BYTES
    context.target_min_block_size = BLOCK_BYTES // 16
    try:
        yield
    finally:
        (
            context.execution_options.preserve_order,
            context.target_max_block_size,
            context.target_min_block_size,
        ) = kept


def check_rows(source: Source, fields: Fields) -> int:
    """The checking pass: every row (FILE:LINE in messages), unique ids; nothing is written.

    Files are on this machine: they are read here, as ``hubsearch add`` reads them (a pass
    through Ray cost a 2-core machine 4x the time). A dataset's rows stream through here.
    Images have nothing more to check: their ids are their paths, and a bad image is skipped
    and reported, as ``hubsearch add`` does, not a reason to refuse the whole add.
    """
    if source.kind == IMAGES:
        return len(source.paths)
    if source.kind == RECORDS:
        return check_all(row for path in source.paths for row in iter_rows(path, fields))
    seen = IdSet()
    try:
        first = 1
        for batch in unwrapped(
            source.dataset.iter_batches(
                batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=1
            )
        ):
            for row in source.rows(batch, fields, first):
                seen.add(row)
            first += batch.num_rows
        return len(seen)
    finally:
        seen.close()


def _encode_and_commit(
    col: Any,
    source: Source,
    fields: Fields,
    pool: tuple[int, float],
    batch_size: int | None,
    chunk: int,
    timings: dict[str, float],
) -> AddReport:
    ray = import_ray()
    actors, gpus_per_actor = pool
    started = time.perf_counter()
    manifest = col.manifest
    ledger = _ledger(ray, col.folder)
    options, shipped = ship_external_options(ray, col.encoder, manifest.encoder.get("options", {}))
    resources: dict[str, Any] = (
        {"num_gpus": gpus_per_actor, "num_cpus": 1} if gpus_per_actor else {"num_cpus": 1}
    )
    encoded = source.dataset.map_batches(
        EncoderActor,
        fn_constructor_kwargs={
            "encoder": manifest.encoder["name"],
            "options": options,
            "shipped": shipped,
            "fingerprint": manifest.encoder["fingerprint"],
            "collection": manifest.name,
            "source": Source(None, source.kind),
            "fields": fields,
            "ledger": ledger,
            "batch_size": batch_size,
        },
        batch_size=source.batch_rows,
        batch_format="pyarrow",
        # Ray Data restarts a lost actor and retries its batch (max_restarts=-1 by default):
        # no gap, and no duplicate, since the driver commits each row by id.
        compute=ray.data.ActorPoolStrategy(size=actors),
        **resources,
    )
    report = AddReport()
    fingerprint = manifest.encoder["fingerprint"]
    modality = IMAGE if source.kind == IMAGES else TEXT
    pending: list[dict[str, Any]] = []
    waiting = 0
    # Two batches prefetched at most: backpressure, not collect-all.
    stream = encoded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)
    for batch in unwrapped(stream):
        timings.setdefault("first_batch", time.perf_counter() - started)
        report.unchanged += int(batch["unchanged"].sum())
        report.skipped.extend(
            (str(path), str(error))
            for path, error in zip(batch["text"], batch["error"], strict=True)
            if error
        )
        keep = ~batch["skip"]
        part = {k: batch[k][keep] for k in ("id", "text", "metadata", "vector")}
        if len(part["id"]):
            pending.append(part)
            waiting += len(part["id"])
        if waiting >= chunk:
            _commit(col, pending, fingerprint, modality, report)
            pending, waiting = [], 0
    if pending:
        _commit(col, pending, fingerprint, modality, report)
    timings["encode"] = time.perf_counter() - started
    return report


def unwrapped(batches: Iterator[Any]) -> Iterator[Any]:
    """Batches from Ray; a hubsearch error raised remotely (a bad row in a reader, an actor's
    encoder in another space) comes back wrapped in Ray's exceptions and is raised here as the
    one-line error it is."""
    try:
        yield from batches
    except Exception as exc:
        cause = own_error(exc)
        if cause is None:
            raise
        raise cause from None


def own_error(exc: BaseException | None) -> HubsearchError | None:
    """The hubsearch error at the root of a Ray exception, as a plain one-line error.

    Ray wraps an actor's exception (a failed constructor comes back as ``ActorDiedError``
    with only the remote traceback as text); users get the original class and line.
    """
    from engine import errors

    text = ""
    seen = 0
    while exc is not None and seen < 20:
        text += "\n" + str(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        seen += 1
    found = _REMOTE_ERROR.findall(text)
    if not found:
        return None
    name, message = found[-1]
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, HubsearchError)):
        return None
    return kind(message.strip())


def _commit(
    col: Any, parts: list[dict[str, Any]], fingerprint: Any, modality: str, report: AddReport
) -> None:
    ids = [str(i) for p in parts for i in p["id"]]
    contents = [str(t) for p in parts for t in p["text"]]
    metas = [json.loads(m) for p in parts for m in p["metadata"]]
    vectors = np.concatenate([np.asarray(p["vector"], dtype=np.float32) for p in parts])
    report.encoded += len(ids)
    report.merge(col.add_encoded(contents, vectors, ids, metas, fingerprint, modality=modality))


# -- the ledger: which rows are stored already --------------------------------------------------


def here(ray: Any) -> dict[str, str]:
    """A label selector for this machine (the driver's): the collection and input files."""
    return {"ray.io/node-id": ray.get_runtime_context().get_node_id()}


def _ledger(ray: Any, folder: Path) -> Any:
    """A ledger actor on this machine, which can read the collection's store."""
    actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Ledger)
    return actor.options(label_selector=here(ray)).remote(str(folder))


class Ledger:
    """Answers "is this id stored with this content hash?" from the last committed generation."""

    def __init__(self, folder: str) -> None:
        from engine.collection import open_store
        from engine.manifest import read_manifest

        self.folder = Path(folder)
        self.read_manifest = read_manifest
        self.store = open_store(self.folder, read_manifest(self.folder))

    def stored(self, ids: list[str], hashes: list[str]) -> list[bool]:
        generation = self.read_manifest(self.folder).generation
        live = self.store.live_hashes(ids, generation)
        return [i in live and live[i][1] == h for i, h in zip(ids, hashes, strict=True)]


# -- shipping what the encoder reads from disk --------------------------------------------------


def ship_external_options(
    ray: Any, encoder: Any, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options with every local file/folder the encoder loads put into Ray's object store.

    Returns the options without those paths and ``{option: (ObjectRef to a tar, name)}``;
    remote handles (URLs) and bundled weights stay as they are.
    """
    options = dict(options)
    shipped: dict[str, Any] = {}
    for key in sorted(getattr(encoder, "external_options", ())):
        value = options.get(key)
        if not isinstance(value, str) or "://" in value:
            continue
        path = Path(value).expanduser()
        if path.exists():
            shipped[key] = (ray.put(pack(path)), path.name)
            options[key] = None
    return {k: v for k, v in options.items() if v is not None}, shipped


def pack(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack(data: bytes, name: str, into: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(into, filter="data")
    return os.path.join(into, name)


class EncoderActor:
    """One per CPU or GPU: builds the collection's encoder once and encodes batches of rows."""

    def __init__(
        self,
        encoder: str,
        options: dict[str, Any],
        shipped: dict[str, Any],
        fingerprint: dict[str, Any],
        collection: str,
        source: Source,
        fields: Fields,
        ledger: Any,
        batch_size: int | None,
    ) -> None:
        import ray

        from engine.registry import default_registry

        self._tmp = tempfile.TemporaryDirectory(prefix="hubsearch-encoder-")
        options = dict(options)
        for key, (ref, name) in shipped.items():
            options[key] = unpack(ray.get(ref), name, self._tmp.name)
        self.encoder = default_registry().encoder_class(encoder)(**options)
        check_fingerprint(self.encoder, collection, fingerprint)
        self.source, self.fields, self.ledger = source, fields, ledger
        self.batch_size = max(1, int(batch_size or self.encoder.batch_size))

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        import ray

        items = self.source.items(batch, self.fields)
        hashes = [content_hash(it.modality, it.content, it.metadata) for it in items]
        stored = ray.get(self.ledger.stored.remote([it.id for it in items], hashes))
        errors = [it.error for it in items]
        todo = [i for i, s in enumerate(stored) if not s and not errors[i]]
        sources = self._sources(items, todo, errors)
        todo = [i for i in todo if not errors[i]]
        vectors = np.zeros((len(items), self.encoder.dim), dtype=np.float32)
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            vectors[part] = self.encoder.encode([sources[i] for i in part], items[part[0]].modality)
        return {
            "id": np.array([it.id for it in items], dtype=object),
            "text": np.array([it.content for it in items], dtype=object),
            "metadata": np.array([it.metadata for it in items], dtype=object),
            "vector": vectors,
            "skip": np.array([s or bool(e) for s, e in zip(stored, errors, strict=True)]),
            "unchanged": np.array(stored, dtype=np.int64),
            "error": np.array(errors, dtype=object),
        }

    def _sources(self, items: list[Item], todo: list[int], errors: list[str]) -> dict[int, Any]:
        """What the encoder takes for each row to encode: the text, or the decoded image.

        Images are decoded here by ``engine.images`` with the in-process add's limits (a
        decompression bomb is refused from its header) and reduction for this encoder; one
        that cannot be decoded gets its reason in ``errors`` and is skipped.
        """
        from engine.images import as_rgb_array, decode_min_side

        sources: dict[int, Any] = {}
        min_side = decode_min_side(self.encoder)
        for i in todo:
            it = items[i]
            if it.modality != IMAGE:
                sources[i] = it.payload
                continue
            try:
                sources[i] = as_rgb_array(it.payload, it.content, min_side=min_side)
            except BadInput as exc:
                errors[i] = str(exc).removeprefix(f"{it.content}: ")
        return sources


def check_fingerprint(encoder: Any, name: str, fingerprint: dict[str, Any]) -> None:
    """Refuse an actor whose encoder is not the collection's (other weights, other version)."""
    try:
        check_same_fingerprint(name, fingerprint, encoder.fingerprint)
    except SpaceMismatch as exc:
        raise SpaceMismatch(f"encoder actor on {os.uname().nodename}: {exc}") from None
