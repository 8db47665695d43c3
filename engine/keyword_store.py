"""The keyword index's SQL: an FTS5 table inside the collection's SQLite store.

Its rows are written, rolled back and purged in the same transactions as the document rows
they index (see `engine.store`), so the crash rules of the store hold for it unchanged. It
holds every text row the store physically holds (retired ones until they are purged); a search
joins its matches with ``documents`` under ``visible(gen)``, exactly like every other query, so
a reader sees the keyword index of the generation its manifest names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, column, false, func, literal_column, select, table

from engine.errors import BadInput
from engine.keywords import TABLE, TOKENIZER, filter_query, segment

keywords = table(TABLE, column("rowid"), column("terms"))


def require_sqlite(dialect: str) -> None:
    if dialect != "sqlite":
        raise BadInput(
            "keyword search needs a SQLite store (FTS5); this collection's store is "
            f"{dialect}: search with mode='vector'"
        )


def exists(conn: Any) -> bool:
    if conn.dialect.name != "sqlite":
        return False
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    return found is not None


def create(conn: Any) -> None:
    """(Re)create the table empty: a build left by a killed `reindex --keyword` is dropped."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
    conn.exec_driver_sql(f'CREATE VIRTUAL TABLE {TABLE} USING fts5(terms, tokenize="{TOKENIZER}")')


def insert(conn: Any, rows: Sequence[tuple[int, str, str]]) -> int:
    """Index (internal id, modality, content) rows; only texts have words to index."""
    params = [(i, segment(content)) for i, modality, content in rows if modality == "text"]
    if params:
        conn.exec_driver_sql(f"INSERT INTO {TABLE}(rowid, terms) VALUES (?, ?)", params)
    return len(params)


def delete_where(conn: Any, doc_ids: Any) -> None:
    """Drop the rows of the documents ``doc_ids`` (a select of ids) selects, if indexed."""
    if exists(conn):
        conn.execute(keywords.delete().where(keywords.c.rowid.in_(doc_ids)))


def matches(fts_query: str) -> ColumnElement[bool]:
    return keywords.c.terms.op("MATCH")(fts_query)


def text_clause(doc_id: ColumnElement[Any], value: Any, dialect: str) -> ColumnElement[bool]:
    """The ``$text`` filter: documents holding every word of ``value`` (see filter_query)."""
    if not isinstance(value, str):
        raise BadInput(f"where: $text takes a string, got {type(value).__name__}")
    require_sqlite(dialect)
    query = filter_query(value)
    if query is None:
        return false()  # no words: nothing can hold all of them
    return doc_id.in_(select(keywords.c.rowid).where(matches(query)))


def ranked(fts_query: str, id_column: ColumnElement[Any], conditions: Any, limit: int) -> Any:
    """(id, score) of the best matches, best first; score = -bm25 (higher is better)."""
    score = -func.bm25(literal_column(TABLE))
    return (
        select(keywords.c.rowid, score.label("score"))
        .select_from(keywords.join(id_column.table, id_column == keywords.c.rowid))
        .where(matches(fts_query), conditions)
        .order_by(literal_column("score").desc())
        .limit(limit)
    )


def stats(conn: Any) -> dict[str, int]:
    """Rows and bytes of the keyword index (its FTS5 shadow tables, page by page if SQLite
    was built with dbstat, else the bytes of their stored values)."""
    rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {TABLE}").scalar_one())
    try:
        size = conn.exec_driver_sql(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ?", (f"{TABLE}%",)
        ).scalar_one()
    except Exception:  # no dbstat in this build
        size = sum(
            conn.exec_driver_sql(sql).scalar_one() or 0
            for sql in (
                f"SELECT sum(length(block)) FROM {TABLE}_data",
                f"SELECT sum(length(c0)) FROM {TABLE}_content",
                f"SELECT sum(length(sz)) FROM {TABLE}_docsize",
            )
        )
    return {"rows": rows, "bytes": int(size)}
