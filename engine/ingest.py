"""Readers that turn files into (id, text, metadata) rows for ``hubsearch add``.

Every row is checked while reading and a bad one stops the import with ``file:line`` and what is
wrong, before anything is written: a half-imported file is harder to fix than a rejected one.
Rows without an id get ``<file name>:<line>``, so importing the same file again replaces rather
than duplicates.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.limits import MAX_METADATA_DEPTH, MAX_TEXT_BYTES, check_text_size, deeper_than

_TOO_DEEP = f"nests objects and lists deeper than {MAX_METADATA_DEPTH} levels"
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt", ".text", ".md"}
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


def read_rows(path: Path, fields: Fields) -> list[Row]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    if suffix in {".jsonl", ".ndjson", ".json"}:
        records = _jsonl_records(path)
    elif suffix in {".csv", ".tsv"}:
        records = _csv_records(path, "\t" if suffix == ".tsv" else ",")
    else:
        records = _text_records(path)
    rows = [_to_row(path, line, rec, fields) for line, rec in records]
    check_unique(rows)
    return rows


def _open(path: Path) -> Any:
    return path.open("r", encoding="utf-8-sig", newline="")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInput(f"{path.name}:{lineno}: not valid JSON ({exc.msg})") from None
                except RecursionError:
                    raise BadInput(f"{path.name}:{lineno}: {_TOO_DEEP}") from None
                if not isinstance(record, dict):
                    raise BadInput(f"{path.name}:{lineno}: expected a JSON object per line")
                yield lineno, record
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path.name}: not UTF-8 text ({exc.reason})") from None


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


def _to_row(path: Path, line: int, record: dict[str, Any], fields: Fields) -> Row:
    where = f"{path.name}:{line}"
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
    if fields.id is not None:
        if fields.id not in record or str(record[fields.id]).strip() == "":
            raise BadInput(f"{where}: no {fields.id!r} field (the id field, see --id-field)")
        ext_id = str(record[fields.id])
        id_key = fields.id
    elif "id" in record:
        ext_id, id_key = str(record["id"]), "id"
    else:
        ext_id, id_key = where, None
    if fields.meta:
        metadata = {k: record[k] for k in fields.meta if k in record}
    else:
        metadata = {k: v for k, v in record.items() if k not in {fields.text, id_key}}
    return Row(ext_id, text, metadata, where)


def check_unique(rows: Sequence[Row]) -> None:
    """Ids must be unique across everything one add reads (several files included)."""
    seen: dict[str, str] = {}
    for row in rows:
        if row.id in seen:
            raise BadInput(f"{row.where}: duplicate id {row.id!r} (first at {seen[row.id]})")
        seen[row.id] = row.where


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
