"""The keyword index's SQL: an FTS5 table inside the collection's SQLite store.

Its rows are written, rolled back and purged in the same transactions as the document rows
they index (see `engine.store`), so the crash rules of the store hold for it unchanged. It
holds every text row the store physically holds (retired ones until they are purged); a search
joins its matches with ``documents`` under ``visible(gen)``, exactly like every other query, so
a reader sees the keyword index of the generation its manifest names.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, column, false, func, literal_column, select, table
from sqlalchemy.exc import DatabaseError, OperationalError

from engine.errors import BadInput
from engine.keywords import TABLE, TOKENIZER, any_of, filter_query, segment

#: Below this many documents every term is searched; above, terms in more than COMMON_SHARE
#: of the documents are left out of the match (they still count in the ideal match's score).
#: FTS5's bm25 reads the whole posting list of every term it matches: with only the words in
#: over half of the documents left out (bm25 weighs those zero), keyword p50 at 100,000
#: passages was 86 ms; at a tenth, 10.5 ms (their idf, at most log 9, is a fifth of a rare
#: word's). Measured in bench/hybrid.py; docs/benchmarks.md has the quality either way.
PRUNE_FROM = 1_000
COMMON_SHARE = 0.1
#: Cached document frequencies, and how far the collection may grow before one is recounted.
DF_CACHE = 100_000
DF_DRIFT = 0.1

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


def check(conn: Any) -> list[str]:
    """What is wrong with the keyword index, as phrases (empty when sound); reads it all.

    FTS5's own integrity-check (its index against its stored terms), then the index against
    the documents: every text row indexed once, nothing else indexed, and each row's terms
    the segmentation of its document's content, so an index that missed a write, kept a
    purged row or holds stale terms is found, not only a damaged page.
    """
    problems = []
    try:
        # A command written as an INSERT: it waits (busy timeout) for a writer's transaction.
        conn.exec_driver_sql(f"INSERT INTO {TABLE}({TABLE}) VALUES ('integrity-check')")
    except OperationalError:
        raise  # a lock held too long, a full disk: not damage
    except DatabaseError as exc:  # SQLITE_CORRUPT_VTAB: "database disk image is malformed"
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        problems.append(f"FTS5 integrity-check failed ({reason})")
        return problems  # the counts below would read the same damaged pages
    texts = "SELECT id FROM documents WHERE modality = 'text'"
    for sql, says in (
        (f"{texts} AND id NOT IN (SELECT rowid FROM {TABLE})", "text document(s) not indexed"),
        (
            f"SELECT rowid FROM {TABLE} WHERE rowid NOT IN ({texts})",
            "indexed row(s) without a text document",
        ),
    ):
        n = conn.exec_driver_sql(f"SELECT count(*) FROM ({sql})").scalar_one()
        if n:
            problems.append(f"{n} {says}")
    rows = conn.exec_driver_sql(
        f"SELECT d.content, k.terms FROM documents AS d JOIN {TABLE} AS k ON k.rowid = d.id"
    )
    stale = sum(segment(content) != terms for content, terms in rows)
    if stale:
        problems.append(f"{stale} indexed row(s) whose terms are not their document's")
    return problems


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


class TermStats:
    """Document frequencies of terms, cached per store handle.

    FTS5 counts a term's documents by walking its posting list (11 ms for a term in 17,000 of
    20,000 pages on a busy machine), and the same few common words come back in most queries.
    A frequency is recounted once the collection has grown or shrunk by DF_DRIFT since.
    """

    def __init__(self) -> None:
        self._df: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def frequencies(self, conn: Any, terms: set[str], total: int) -> dict[str, int]:
        out, missing = {}, []
        with self._lock:
            for t in terms:
                got = self._df.get(t)
                if got is None or abs(got[1] - total) > DF_DRIFT * max(total, 100):
                    missing.append(t)
                else:
                    out[t] = got[0]
        if missing:
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{TABLE}_vocab "
                f"USING fts5vocab(main, {TABLE}, row)"
            )
            sql = f"SELECT doc FROM temp.{TABLE}_vocab WHERE term = ?"
            counted = {t: conn.exec_driver_sql(sql, (t,)).scalar() or 0 for t in missing}
            out.update(counted)
            with self._lock:
                if len(self._df) > DF_CACHE:
                    self._df.clear()
                self._df.update({t: (n, total) for t, n in counted.items()})
        return out


def plan(units: list[tuple[str, ...]], df: dict[str, int], total: int) -> tuple[str | None, float]:
    """The FTS5 query to run and the bm25 score of an ideal match, for normalising.

    The ideal is the sum of the units' idf (FTS5's formula): what a document of average length
    holding each unit once would score. A match divided by it says how much of the query's
    weight the document holds, so a match on two common words of a five-word query counts
    little beside a vector match, while a rare identifier matched exactly counts fully.
    """
    unit_df = [min(df.get(t, 0) for t in u) for u in units]
    # The index also holds retired rows until they are purged: a count can exceed ``total``.
    n = max(total, *unit_df, 1)
    ideal = sum(max(math.log((n - d + 0.5) / (d + 0.5)), 1e-6) for d in unit_df)
    keep = [u for u, d in zip(units, unit_df, strict=True) if d > 0]
    if total >= PRUNE_FROM:
        rare = [u for u, d in zip(units, unit_df, strict=True) if 0 < d <= n * COMMON_SHARE]
        # only common words: search the least common one
        keep = rare if rare or not keep else [min(keep, key=lambda u: min(df[t] for t in u))]
    return any_of(keep), ideal


#: The best matches by bm25 alone, then each one's visibility at a generation (1 or 0): the
#: documents table is read for these few rows only. Joined before ranking (`ranked`), every
#: match (1,000 for a median manual-page summary at 100,000 passages) cost a lookup in
#: ``documents``: 7 ms of a query's 8 at p50, against 2.9 ms this way (bench/hybrid.py speed).
_TOP_FIRST = (
    f"SELECT t.rowid, t.score, d.gen_added <= :gen AND "
    f"(d.gen_deleted IS NULL OR d.gen_deleted > :gen) "
    f"FROM (SELECT rowid, -bm25({TABLE}) AS score FROM {TABLE} WHERE {TABLE} MATCH :q "
    f"ORDER BY score DESC LIMIT :n) AS t LEFT JOIN documents AS d ON d.id = t.rowid "
    f"ORDER BY t.score DESC"
)


def top_first(conn: Any, fts_query: str, gen: int, limit: int) -> list[tuple[int, float]] | None:
    """(id, score) of the best ``limit`` matches visible at ``gen``, best first, or None when
    too many of the best matches are not visible there (retired or newer rows not yet purged):
    the caller then ranks with the join (`ranked`)."""
    fetch = 2 * limit + 20
    rows = conn.exec_driver_sql(_TOP_FIRST, {"gen": gen, "q": fts_query, "n": fetch}).fetchall()
    seen = [(r[0], r[1]) for r in rows if r[2]]
    if len(seen) < limit and len(rows) == fetch:
        return None
    return seen[:limit]


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
