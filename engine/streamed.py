"""Adds too large to hold in memory: a checking pass over every row, then commits in chunks.

``hubsearch add`` reads a JSONL or CSV file whole, which is fine for a knowledge base; a Parquet
export of tens of millions of tickets is not. Here the rows are read twice: the first pass checks
every row and refuses duplicate ids (``IdSet`` spills to disk) before anything is written, the
second adds ``COMMIT_EVERY`` rows per ``Collection.add`` call. Each call skips unchanged rows by
content hash before encoding, so an add that dies part-way and is run again re-encodes only what
was not committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from engine.collection import COMMIT_EVERY, AddReport
from engine.ingest import IdSet, Row


def check_all(rows: Iterable[Row]) -> int:
    """Read every row (each is checked as it is read) and refuse duplicates; the row count."""
    seen = IdSet()
    try:
        for row in rows:
            seen.add(row)
        return len(seen)
    finally:
        seen.close()


def chunks(rows: Iterable[Row], size: int = COMMIT_EVERY) -> Iterator[list[Row]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def add_streamed(
    col: Any,
    read: Callable[[], Iterable[Row]],
    batch_size: int | None = None,
    progress: bool = False,
) -> AddReport:
    """Add the rows ``read()`` yields (called twice: check, then add) chunk by chunk."""
    check_all(read())
    report = AddReport()
    for chunk in chunks(read()):
        report.merge(add_rows(col, chunk, batch_size, progress))
    return report


def add_rows(
    col: Any, rows: Sequence[Row], batch_size: int | None = None, progress: bool = False
) -> AddReport:
    """One ``col.add`` of checked rows: their texts, ids and metadata."""
    return col.add(
        texts=[r.text for r in rows],
        ids=[r.id for r in rows],
        metadata=[r.metadata for r in rows],
        batch_size=batch_size,
        progress=progress,
    )
