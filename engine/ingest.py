"""Readers that turn files into (id, text, metadata) rows for ``hubsearch add``.

Every row is checked while reading and a bad one stops the import with ``file:line`` and what is
wrong, before anything is written: a half-imported file is harder to fix than a rejected one.
Rows without an id get ``<file name>:<line>``, so importing the same file again replaces rather
than duplicates. Parquet files (large exports) are read a row group at a time and added in
chunks after a first pass has checked every row (``engine.streamed``), so memory stays bounded.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.documents import canonical_metadata, check_id
from engine.errors import BadInput
from engine.limits import MAX_METADATA_DEPTH, MAX_TEXT_BYTES, check_text_size, deeper_than

_TOO_DEEP = f"nests objects and lists deeper than {MAX_METADATA_DEPTH} levels"
PARQUET_SUFFIXES = {".parquet", ".pq"}
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt", ".text", ".md"}
TEXT_SUFFIXES |= PARQUET_SUFFIXES
#: Rows per Parquet record batch: bounds what one read holds (a row group may be far larger).
PARQUET_BATCH = 4096
_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    metadata: dict[str, Any]
    where: str  # "file:line", for messages


@dataclass(frozen=True)
class Fields:
    id: str | None = None  # None: "id" if present, else <file>:<line>
    text: str = "text"
    meta: tuple[str, ...] = ()  # empty: every other field


def is_text_file(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_rows(path: Path, fields: Fields) -> list[Row]:
    rows = list(iter_rows(path, fields))
    check_unique(rows)
    return rows


def iter_rows(path: Path, fields: Fields) -> Iterator[Row]:
    """The file's rows one by one, each checked; duplicates are the caller's (``IdSet``)."""
    for line, rec in iter_records(path):
        yield to_row(path.name, line, rec, fields)


def iter_records(path: Path, row_group: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line or row, record)`` of a file; of one row group only for a Parquet ``row_group``
    (the unit a cluster reads in parallel)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return _jsonl_records(path)
    if suffix in {".csv", ".tsv"}:
        return _csv_records(path, "\t" if suffix == ".tsv" else ",")
    if suffix in PARQUET_SUFFIXES:
        return _parquet_records(path, row_group)
    return _text_records(path)


def parquet_row_groups(path: Path) -> list[int]:
    """Rows in each row group of a Parquet file."""
    with _parquet_file(path) as reader:
        meta = reader.metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _parquet_file(path: Path) -> Any:
    pq = import_pyarrow_parquet()
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise BadInput(f"{path.name}: not a readable Parquet file ({exc})") from None


def _parquet_records(path: Path, row_group: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with _parquet_file(path) as reader:
        meta = reader.metadata
        groups = range(meta.num_row_groups) if row_group is None else [row_group]
        row = sum(meta.row_group(g).num_rows for g in range(groups[0])) if groups else 0
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH, row_groups=groups):
            for record in batch.to_pylist():
                row += 1
                yield row, plain_record(record)


def import_pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BadInput("reading Parquet needs pyarrow: pip install 'hubsearch[parquet]'") from None
    return pq


def plain_record(record: dict[str, Any]) -> dict[str, Any]:
    """Arrow values as JSON values: dates and times as ISO text, decimals as numbers.

    Metadata is stored as JSON; a timestamp column would otherwise refuse the whole file.
    """
    return {k: _plain(v) for k, v in record.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return {str(k): _plain(v) for k, v in value}  # an Arrow map column
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    return str(value)


def _open(path: Path) -> Any:
    return path.open("r", encoding="utf-8-sig", newline="")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, parse_json_line(path.name, lineno, line)
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path.name}: not UTF-8 text ({exc.reason})") from None


def parse_json_line(source: str, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{source}:{lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise BadInput(f"{source}:{lineno}: {_TOO_DEEP}") from None
    if not isinstance(record, dict):
        raise BadInput(f"{source}:{lineno}: expected a JSON object per line")
    return record


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # The csv module's default of 128 KiB a cell refused legitimate long texts as "malformed";
    # a cell may be as long as a text may be (the limit is process-wide, so it only grows).
    csv.field_size_limit(max(csv.field_size_limit(), MAX_TEXT_BYTES))
    with _open(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            if not reader.fieldnames:
                return
            for record in reader:
                if None in record:
                    raise BadInput(f"{path.name}:{reader.line_num}: more cells than header fields")
                yield reader.line_num, {k: _cell(v) for k, v in record.items() if v is not None}
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path.name}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            # DictReader's own line_num moves only after a good row: the inner reader's is current
            raise BadInput(f"{path.name}:{reader.reader.line_num}: malformed CSV ({exc})") from None


def _cell(value: str) -> Any:
    """CSV cells that are plainly numbers become numbers, so range filters work on them."""
    if _NUMBER.match(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


def _text_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, {"text": line.rstrip("\r\n")}
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path.name}: not UTF-8 text ({exc.reason})") from None


def to_row(source: str, line: int, record: dict[str, Any], fields: Fields) -> Row:
    """A checked row: id, text (non-empty, within limits) and metadata (storable)."""
    where = f"{source}:{line}"
    if deeper_than(record, MAX_METADATA_DEPTH):  # before str() of an id recurses through it
        raise BadInput(f"{where}: {_TOO_DEEP}")
    text = record.get(fields.text)
    if text is None:
        raise BadInput(f"{where}: no {fields.text!r} field (choose another with --text-field)")
    if not isinstance(text, str):
        raise BadInput(f"{where}: field {fields.text!r} is not a string")
    if not text.strip():
        raise BadInput(f"{where}: field {fields.text!r} is empty")
    check_text_size(text, where)
    # A null id is an absent one (Parquet and Arrow write a missing key as null), never "None".
    if fields.id is not None:
        if record.get(fields.id) is None or str(record[fields.id]).strip() == "":
            raise BadInput(f"{where}: no {fields.id!r} field (the id field, see --id-field)")
        ext_id = str(record[fields.id])
        id_key = fields.id
    elif record.get("id") is not None:
        ext_id, id_key = str(record["id"]), "id"
    else:
        ext_id, id_key = where, "id" if "id" in record else None
    if fields.meta:
        metadata = {k: record[k] for k in fields.meta if k in record}
    else:
        metadata = {k: v for k, v in record.items() if k not in {fields.text, id_key}}
    check_id(ext_id, where)
    canonical_metadata(metadata, where)
    return Row(ext_id, text, metadata, where)


def check_unique(rows: Iterable[Row]) -> None:
    """Ids must be unique across everything one add reads (several files included)."""
    seen = IdSet()
    try:
        for row in rows:
            seen.add(row)
    finally:
        seen.close()


class IdSet:
    """The ids one add has read, to refuse duplicates; spills to a SQLite temp file when large.

    A first pass over tens of millions of rows must not hold every id in memory: past
    ``in_memory`` ids the set moves into a temporary SQLite table (a B-tree on disk).
    """

    def __init__(self, in_memory: int = 1_000_000) -> None:
        self.in_memory = in_memory
        self._seen: dict[str, str] = {}
        self._db: Any = None
        self._dir: Any = None

    def add(self, row: Row) -> None:
        first = self._first(row.id)
        if first is not None:
            raise BadInput(f"{row.where}: duplicate id {row.id!r} (first at {first})")
        if self._db is None:
            self._seen[row.id] = row.where
            if len(self._seen) > self.in_memory:
                self._spill()
        else:
            self._db.execute("INSERT INTO seen VALUES (?, ?)", (row.id, row.where))

    def _first(self, ext_id: str) -> str | None:
        if self._db is None:
            return self._seen.get(ext_id)
        found = self._db.execute("SELECT at FROM seen WHERE id = ?", (ext_id,)).fetchone()
        return None if found is None else found[0]

    def _spill(self) -> None:
        import sqlite3
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="hubsearch-ids-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "ids.sqlite"))
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, at TEXT) WITHOUT ROWID")
        self._db.executemany("INSERT INTO seen VALUES (?, ?)", self._seen.items())
        self._seen = {}

    def __len__(self) -> int:
        if self._db is None:
            return len(self._seen)
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def read_sidecar(path: Path, key_field: str) -> dict[str, dict[str, Any]]:
    """Image metadata keyed by file name, from a CSV or JSONL sidecar."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        records = _csv_records(path, "\t" if suffix == ".tsv" else ",")
    else:
        records = _jsonl_records(path)
    table: dict[str, dict[str, Any]] = {}
    for line, record in records:
        if key_field not in record:
            raise BadInput(f"{path.name}:{line}: no {key_field!r} field naming the image file")
        key = str(record[key_field])
        table[key] = {k: v for k, v in record.items() if k != key_field}
    return table
