"""Encode on a Ray cluster, commit here: ``Collection.add_dataset`` and ``hubsearch add --ray``.

The collection keeps one writer and crash-safe commits; only encoding is spread. The driver
(this process) reads every row once to check it and refuse duplicate ids before anything is
written, then Ray streams the rows through a pool of encoder actors (``map_batches``, one CPU
or GPU each) and the encoded batches back to the driver, which commits them through the normal
writer a chunk at a time. Ray Data bounds what is in flight (backpressure), so memory here does
not grow with the dataset.

Resuming: before encoding a batch an actor asks the ledger (an actor on the driver's machine,
which can read the collection's store) which rows are already stored with the same content
hash, and skips them, so re-running an interrupted add re-encodes only what was not committed.

Actors never read the driver's disk: the encoder is rebuilt on each actor from its name and
options, and every option naming a local file or folder (the plugin's ``external_options``: a
SavedModel ``handle=``, a ``towers=`` folder) is packed into Ray's object store and unpacked
into a temporary folder on the actor. The actor then checks that its encoder's fingerprint is
the collection's, so an actor with other weights cannot write into this embedding space.

Nothing in the core imports this module or Ray; ``Collection.add_dataset`` imports it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.collection import COMMIT_EVERY, AddReport, check_same_fingerprint
from engine.documents import canonical_metadata, content_hash
from engine.encoders import TEXT
from engine.errors import BadInput, SpaceMismatch
from engine.ingest import Fields, IdSet, Row, parse_json_line, plain_record, to_row

INSTALL = "pip install 'hubsearch[ray]'"
#: Rows per batch read by the checking pass (driver) and handed to an encoder actor.
READ_BATCH = 1024


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # the extra is ray[data]; plain ray lacks it
    except ImportError:
        raise BadInput(f"encoding on a Ray cluster needs Ray: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class Source:
    """A dataset and how to turn its records into the dicts ``hubsearch add`` reads.

    ``label`` names positions in messages (``kb.parquet:17``); JSONL is read as lines and parsed
    here, as ``hubsearch add`` parses it, since Arrow's JSON reader would fill absent keys with
    nulls and change the stored metadata.
    """

    dataset: Any
    label: str
    json_lines: bool = False

    def record(self, raw: dict[str, Any], position: int) -> dict[str, Any]:
        if self.json_lines:
            return parse_json_line(self.label, position, raw["text"])
        return plain_record(raw)


def open_source(data: Any) -> Source:
    """A ``ray.data.Dataset``, or a path Ray Data reads (JSONL, CSV, Parquet: file or folder)."""
    ray = import_ray()
    if isinstance(data, ray.data.Dataset):
        return Source(data, "dataset")
    path = Path(os.fspath(data))
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    kinds = {p.suffix.lower() for p in files if not p.name.startswith((".", "_"))}
    if kinds <= {".parquet", ".pq"} and kinds:
        return Source(ray.data.read_parquet(str(path)), path.name)
    if kinds <= {".jsonl", ".ndjson", ".json"} and kinds:
        lines = ray.data.read_text(str(path), drop_empty_lines=False)
        return Source(lines, path.name, json_lines=True)
    if kinds <= {".csv"} and kinds:
        return Source(ray.data.read_csv(str(path)), path.name)
    raise BadInput(
        f"{path}: add_dataset reads Parquet, JSONL or CSV (a file, or a folder of one kind); "
        f"found {', '.join(sorted(kinds)) or 'no files'}"
    )


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
) -> AddReport:
    ray = import_ray()
    if actors < 1:
        raise BadInput(f"actors must be at least 1, got {actors}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    fields = Fields(id=id, text=text, meta=tuple(metadata or ()))
    source = open_source(data)
    context = ray.data.DataContext.get_current()
    kept_order = context.execution_options.preserve_order
    # Positions in messages (FILE:ROW) count rows in file order, in both passes.
    context.execution_options.preserve_order = True
    try:
        check_rows(source, fields)
        return _encode_and_commit(col, source, fields, actors, gpus_per_actor, batch_size, chunk)
    finally:
        context.execution_options.preserve_order = kept_order


def iter_records(source: Source) -> Iterator[tuple[int, dict[str, Any]]]:
    position = 0
    for batch in source.dataset.iter_batches(
        batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=1
    ):
        for raw in batch.to_pylist():
            position += 1
            if source.json_lines and not raw["text"].strip():
                continue
            yield position, source.record(raw, position)


def check_rows(source: Source, fields: Fields) -> int:
    """The checking pass: every row (FILE:ROW in messages), unique ids; nothing is written."""
    seen = IdSet()
    try:
        for position, record in iter_records(source):
            row = to_row(source.label, position, record, fields)
            if fields.id is None and "id" not in record:
                raise BadInput(
                    f"{row.where}: no 'id' field; rows encoded on a cluster need ids from the "
                    f"data (id=FIELD / --id-field), a FILE:ROW position is not stable there"
                )
            seen.add(row)
        return len(seen)
    finally:
        seen.close()


def _encode_and_commit(
    col: Any,
    source: Source,
    fields: Fields,
    actors: int,
    gpus_per_actor: float,
    batch_size: int | None,
    chunk: int,
) -> AddReport:
    ray = import_ray()
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
            "source": Source(None, source.label, source.json_lines),
            "fields": fields,
            "ledger": ledger,
            "batch_size": batch_size,
        },
        batch_size=READ_BATCH,
        batch_format="pyarrow",
        concurrency=actors,
        max_restarts=-1,
        max_task_retries=-1,
        **resources,
    )
    report = AddReport()
    fingerprint = manifest.encoder["fingerprint"]
    pending: list[dict[str, Any]] = []
    waiting = 0
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        report.unchanged += int(batch["unchanged"].sum())
        keep = ~batch["skip"]
        part = {k: batch[k][keep] for k in ("id", "text", "metadata", "vector")}
        if len(part["id"]):
            pending.append(part)
            waiting += len(part["id"])
        if waiting >= chunk:
            _commit(col, pending, fingerprint, report)
            pending, waiting = [], 0
    if pending:
        _commit(col, pending, fingerprint, report)
    return report


def _commit(col: Any, parts: list[dict[str, Any]], fingerprint: Any, report: AddReport) -> None:
    ids = [str(i) for p in parts for i in p["id"]]
    texts = [str(t) for p in parts for t in p["text"]]
    metas = [json.loads(m) for p in parts for m in p["metadata"]]
    vectors = np.concatenate([np.asarray(p["vector"], dtype=np.float32) for p in parts])
    report.encoded += len(ids)
    report.merge(col.add_encoded(texts, vectors, ids, metas, fingerprint))


# -- the ledger: which rows are stored already --------------------------------------------------


def _ledger(ray: Any, folder: Path) -> Any:
    """A ledger actor pinned to this machine, where the collection's files are."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Ledger)
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    ).remote(str(folder))


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

        rows: list[tuple[Row, str]] = []
        for raw in batch.to_pylist():
            if self.source.json_lines and not raw["text"].strip():
                continue
            row = to_row(self.source.label, 0, self.source.record(raw, 0), self.fields)
            meta_json = canonical_metadata(row.metadata, row.where)[1]
            rows.append((row, meta_json))
        hashes = [content_hash(TEXT, r.text, m) for r, m in rows]
        stored = ray.get(self.ledger.stored.remote([r.id for r, _ in rows], hashes))
        todo = [i for i, s in enumerate(stored) if not s]
        vectors = np.zeros((len(rows), self.encoder.dim), dtype=np.float32)
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            vectors[part] = self.encoder.encode([rows[i][0].text for i in part], TEXT)
        return {
            "id": np.array([r.id for r, _ in rows], dtype=object),
            "text": np.array([r.text for r, _ in rows], dtype=object),
            "metadata": np.array([m for _, m in rows], dtype=object),
            "vector": vectors,
            "skip": np.array(stored, dtype=bool),
            "unchanged": np.array(stored, dtype=np.int64),
        }


def check_fingerprint(encoder: Any, name: str, fingerprint: dict[str, Any]) -> None:
    """Refuse an actor whose encoder is not the collection's (other weights, other version)."""
    try:
        check_same_fingerprint(name, fingerprint, encoder.fingerprint)
    except SpaceMismatch as exc:
        raise SpaceMismatch(f"encoder actor on {os.uname().nodename}: {exc}") from None
