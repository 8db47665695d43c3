"""The metadata store: documents, their metadata and their visibility, through SQLAlchemy.

Rows are versioned by generation rather than updated in place: an add inserts rows with
``gen_added = G+1`` and marks replaced rows ``gen_deleted = G+1``. Until the manifest names G+1
nobody sees either change, so the SQL commit and the manifest rename never need to be one atomic
step, and a reader on generation G keeps a consistent view while a writer works on G+1.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DatabaseError

from engine import keyword_store
from engine.errors import BadInput, CorruptCollection
from engine.filters import compile_where, flatten_metadata, one_of, referenced_fields

#: Ids per IN (...) list where the database allows that many bound parameters (see _chunk_size).
CHUNK = 5_000

schema = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")

documents = Table(
    "documents",
    schema,
    # INTEGER on SQLite makes the id the rowid itself: one B-tree lookup per document, not two.
    Column("id", _ID, primary_key=True, autoincrement=False),
    Column("external_id", String, nullable=False),
    Column("modality", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("gen_added", Integer, nullable=False),
    Column("gen_deleted", Integer, nullable=True),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index(
        "documents_live_external_id",
        "external_id",
        unique=True,
        sqlite_where=Column("gen_deleted").is_(None),
        postgresql_where=Column("gen_deleted").is_(None),
    ),
    Index("documents_gen_added", "gen_added"),
    # Only retired rows: every query on gen_deleted compares it (so implies NOT NULL), and
    # leaving the live majority out saves an index insert per added document.
    Index(
        "documents_gen_deleted",
        "gen_deleted",
        sqlite_where=Column("gen_deleted").isnot(None),
        postgresql_where=Column("gen_deleted").isnot(None),
    ),
)

meta = Table(
    "meta",
    schema,
    Column("doc_id", _ID, nullable=False),
    Column("key", String, nullable=False),
    Column("num", Float, nullable=True),
    Column("text", String, nullable=True),
    Index("meta_key_text", "key", "text", "doc_id"),
    # Numbers only (comparisons on num imply NOT NULL): text values skip this index. Key-only
    # lookups ($exists, null equality) use meta_key_text, which keeps every row.
    Index(
        "meta_key_num",
        "key",
        "num",
        "doc_id",
        sqlite_where=Column("num").isnot(None),
        postgresql_where=Column("num").isnot(None),
    ),
    Index("meta_doc", "doc_id"),
)

fields = Table("fields", schema, Column("key", String, primary_key=True))


@dataclass(frozen=True)
class Document:
    """A stored document as callers see it (the internal id is the vector id)."""

    id: str
    content: str
    metadata: dict[str, Any]
    modality: str
    internal_id: int


@dataclass(frozen=True)
class NewRow:
    internal_id: int
    external_id: str
    modality: str
    content: str
    metadata: dict[str, Any]
    metadata_json: str
    content_hash: str


def visible(gen: int) -> Any:
    d = documents.c
    return and_(d.gen_added <= gen, or_(d.gen_deleted.is_(None), d.gen_deleted > gen))


#: Documents by internal id at a generation. Built once: SQLAlchemy then reuses its compiled
#: form, where a statement built per call cost 1.2 ms of Python (held under the GIL) per search.
_FETCH = select(
    documents.c.id,
    documents.c.external_id,
    documents.c.content,
    documents.c.metadata,
    documents.c.modality,
).where(documents.c.id.in_(bindparam("ids", expanding=True)), visible(bindparam("gen")))


#: _FETCH on SQLite as driver SQL, the ids in one JSON parameter: SQLAlchemy's execute of
#: _FETCH (expanding the id list, processing the parameters and each row) cost 0.5-1 ms of
#: Python per search, held under the GIL, which a server's concurrent searches queue on.
_FETCH_SQLITE = (
    "SELECT id, external_id, content, metadata, modality FROM documents"
    " WHERE id IN (SELECT value FROM json_each(?))"
    " AND gen_added <= ? AND (gen_deleted IS NULL OR gen_deleted > ?)"
)


def connect(url: str) -> Engine:
    """An engine with SQLite tuned for one writer and many readers (WAL, full fsync)."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-16384")
            cur.close()

    return engine


#: SQLite's words for a file that is not (or no longer) a hubsearch store; other database
#: errors (a lock held too long, a full disk) are not damage and pass through unchanged.
DAMAGE = ("file is not a database", "malformed", "no such table", "no such column")


def _refuse_damage(cls: type) -> type:
    """Every public method of ``cls`` turns SQLite's damage errors into `CorruptCollection`.

    One wrapper for the whole class, so no query (including the ones that read the driver's
    cursor directly) can leak a raw ``DatabaseError`` to a caller or a traceback to the CLI.
    """

    def guard(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except (DatabaseError, sqlite3.DatabaseError) as exc:
                orig = getattr(exc, "orig", None) or exc
                reason = str(orig).splitlines()[0]
                if not any(word in reason for word in DAMAGE):
                    raise
                raise CorruptCollection(
                    f"{self.where} is damaged ({reason}): the documents live only there and "
                    f"cannot be rebuilt from the vectors; restore it from a backup"
                ) from None

        return guarded

    for name, attr in list(vars(cls).items()):
        if callable(attr) and not name.startswith("_"):
            setattr(cls, name, guard(attr))
    return cls


@_refuse_damage
class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = connect(url)
        self._fields: set[str] = set()  # seen in the fields table, which only grows
        self.term_stats = keyword_store.TermStats()

    def create_schema(self, keyword: bool = False) -> bool:
        """Create the tables; with ``keyword``, the keyword index too where the store has one
        (SQLite's FTS5). Returns whether a keyword index was made."""
        schema.create_all(self.engine)
        if not keyword or self.engine.dialect.name != "sqlite":
            return False
        with self.engine.begin() as conn:
            keyword_store.create(conn)
        return True

    def upgrade_indexes(self) -> list[str]:
        """Recreate indexes that older versions made full as the partial ones of today.

        Called by a writer under the collection's lock. Besides the cheaper inserts, it
        matters for plans: with a full index on ``gen_deleted``, SQLite answered the upsert
        lookup (``external_id IN (...) AND gen_deleted IS NULL``, 500 ids or more) by walking
        every live row of that index instead of probing the external ids, once per 5,000 ids
        added. Returns the names of the indexes it rebuilt.
        """
        if self.engine.dialect.name != "sqlite":
            return []
        wanted = {
            index.name: index
            for table in (documents, meta)
            for index in table.indexes
            if index.dialect_options["sqlite"]["where"] is not None
        }
        rebuilt = []
        with self.engine.begin() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            ).fetchall()
            for name, sql in rows:
                if name in wanted and sql and " WHERE " not in sql.upper():
                    conn.exec_driver_sql(f'DROP INDEX "{name}"')
                    wanted[name].create(conn)
                    rebuilt.append(name)
        return rebuilt

    def close(self) -> None:
        self.engine.dispose()

    @property
    def where(self) -> str:
        """The store's file (SQLite) or URL without its password, for messages."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database:
            return url.database
        return url.render_as_string(hide_password=True)

    def check(self) -> list[str]:
        """Damage SQLite finds in the file (``PRAGMA quick_check``) and missing tables.

        Read-only and O(file); `verify` runs it. A damaged page that no query has touched
        yet is found here, not by a caller's search some day later.
        """
        if self.engine.dialect.name != "sqlite":
            return []
        with self.engine.connect() as conn:
            found = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
            tables = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
        problems = [f"{self.where} is damaged: {line}" for line in found if line != "ok"]
        missing = sorted(set(schema.tables) - tables)
        if missing:
            problems.append(f"{self.where} is damaged: table {missing[0]!r} is missing")
        return problems

    # -- reading (any process, at a committed generation) --------------------------------------

    def count(self, gen: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(visible(gen))).scalar_one())

    def fetch(self, ids: Sequence[int], gen: int) -> dict[int, Document]:
        """The hits' documents: every search calls this, so its statement is built once."""
        if not len(ids):
            return {}
        found: dict[int, Document] = {}
        ids = [int(i) for i in ids]
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    _FETCH_SQLITE, (json.dumps(ids), gen, gen)
                )
                rows = cursor.fetchall()
            else:
                rows = [
                    r
                    for chunk in _chunks(ids, _chunk_size(conn, 2))
                    for r in conn.execute(_FETCH, {"ids": chunk, "gen": gen})
                ]
        for r in rows:
            found[r[0]] = Document(r[1], r[2], json.loads(r[3]), r[4], r[0])
        return found

    def get(self, external_ids: Sequence[str], gen: int) -> dict[str, Document]:
        d = documents.c
        found: dict[str, Document] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(external_ids), _chunk_size(conn, 2)):
                query = select(d.id, d.external_id, d.content, d.metadata, d.modality).where(
                    d.external_id.in_(chunk), visible(gen)
                )
                for r in conn.execute(query):
                    found[r[1]] = Document(r[1], r[2], json.loads(r[3]), r[4], r[0])
        return found

    def known_fields(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(fields.c.key)).scalars())

    def check_fields(self, where: dict[str, Any]) -> None:
        """Refuse a filter on a field no document has (almost always a typo).

        The fields table only grows, so fields once seen are not asked for again: chatbots
        filter every query on the same few fields. A miss always asks the table again.
        """
        wanted = referenced_fields(where)
        if wanted <= self._fields:
            return
        known = self._fields = self.known_fields()
        missing = sorted(wanted - known)
        if missing:
            raise BadInput(
                f"where: no document has the field {missing[0]!r}; "
                f"known fields: {', '.join(sorted(known)) or 'none'}"
            )

    def matching_ids(
        self,
        where: dict[str, Any],
        gen: int,
        limit: int | None = None,
        among: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Ids of visible documents matching ``where`` (optionally only among candidates)."""
        d = documents.c
        dialect = self.engine.dialect.name
        query = select(d.id).where(
            visible(gen), compile_where(where, d.id, meta, d.modality, dialect)
        )
        with self.engine.connect() as conn:
            if among is None:
                return _ids(conn, query if limit is None else query.limit(limit))
            among = [int(i) for i in among]
            # One statement where one_of packs the ids into one parameter: each statement
            # evaluates the whole filter again. Elsewhere chunks, beside the filter's parameters.
            size = len(among) if dialect == "sqlite" else _chunk_size(conn, _n_params(conn, query))
            found = [
                _ids(conn, query.where(one_of(d.id, chunk, dialect)))
                for chunk in _chunks(among, max(size, 1))
            ]
        ids = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        return ids if limit is None else ids[:limit]

    def live_ids(self, gen: int) -> np.ndarray:
        with self.engine.connect() as conn:
            rows = conn.execute(select(documents.c.id).where(visible(gen)).order_by("id"))
            return np.fromiter(rows.scalars(), dtype=np.int64)

    def delta(self, since: int, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids that became visible and ids that stopped being visible between two generations."""
        d = documents.c
        added = select(d.id).where(d.gen_added > since, d.gen_added <= upto, visible(upto))
        removed = select(d.id).where(
            d.gen_deleted > since, d.gen_deleted <= upto, d.gen_added <= since
        )
        with self.engine.connect() as conn:
            return _id_array(conn.execute(added)), _id_array(conn.execute(removed))

    def keyword_search(
        self,
        units: list[tuple[str, ...]],
        gen: int,
        limit: int,
        where: dict[str, Any] | None,
        total: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the best keyword matches visible at ``gen`` and matching ``where``.

        Scores are bm25 over an ideal match's (see keyword_store.plan), at most 1.
        """
        d = documents.c
        dialect = self.engine.dialect.name
        keyword_store.require_sqlite(dialect)
        condition = None
        if where is not None:  # compiled up front: a bad filter is BadInput before any query
            condition = and_(visible(gen), compile_where(where, d.id, meta, d.modality, dialect))
        with self.engine.connect() as conn:
            terms = {t for u in units for t in u}
            df = self.term_stats.frequencies(conn, terms, total)
            fts_query, ideal = keyword_store.plan(units, df, total)
            if fts_query is None:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            rows = None
            if condition is None:  # no filter: rank by bm25 first, read documents for the best
                rows = keyword_store.top_first(conn, fts_query, gen, limit)
            if rows is None:
                condition = visible(gen) if condition is None else condition
                query = keyword_store.ranked(fts_query, d.id, condition, limit)
                sql, params = _compiled(conn, query)
                rows = conn.exec_driver_sql(sql, params).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        raw = np.array([r[1] for r in rows], dtype=np.float64)
        # A short document, or one repeating a word, scores above the ideal: dividing by the
        # best score then keeps the order among such documents (capping at 1 tied them).
        return ids, (raw / max(ideal, raw.max(initial=0.0))).astype(np.float32)

    def check_keywords(self) -> list[str]:
        """Damage in the keyword index (see keyword_store.check); `verify` runs it."""
        with self.engine.connect() as conn:
            found = keyword_store.check(conn) if keyword_store.exists(conn) else ["it is missing"]
        return [f"{self.where}: the keyword index is damaged: {p}" for p in found]

    def keyword_stats(self) -> dict[str, int] | None:
        """Rows and bytes of the keyword index, None without one."""
        with self.engine.connect() as conn:
            return keyword_store.stats(conn) if keyword_store.exists(conn) else None

    # -- writing (only under the collection's write lock) --------------------------------------

    def live_hashes(self, external_ids: Sequence[str], gen: int) -> dict[str, tuple[int, str]]:
        d = documents.c
        out: dict[str, tuple[int, str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(external_ids), _chunk_size(conn, 1)):
                query = select(d.external_id, d.id, d.content_hash).where(
                    d.external_id.in_(chunk), d.gen_deleted.is_(None), d.gen_added <= gen
                )
                for ext, iid, h in conn.execute(query):
                    out[ext] = (iid, h)
        return out

    def write(
        self,
        new_gen: int,
        rows: Sequence[NewRow],
        retire: Iterable[int],
        keyword: bool = False,
    ) -> None:
        """One transaction: retire old rows and insert new ones, both at ``new_gen``.

        ``keyword``: the collection has a keyword index; its rows commit with the documents.
        """
        now = time.time()
        retire = [int(i) for i in retire]
        docs = [
            (
                r.internal_id,
                r.external_id,
                r.modality,
                r.content,
                r.metadata_json,
                r.content_hash,
                new_gen,
                None,
                now,
                now,
            )
            for r in rows
        ]
        meta_rows = [
            (r.internal_id, k, n, t) for r in rows for k, n, t in flatten_metadata(r.metadata)
        ]
        keys = sorted({m[1] for m in meta_rows})
        with self.engine.begin() as conn:
            for chunk in _chunks(retire, _chunk_size(conn, 1)):
                conn.execute(
                    update(documents).where(documents.c.id.in_(chunk)).values(gen_deleted=new_gen)
                )
            _bulk_insert(conn, documents, docs)
            _bulk_insert(conn, meta, meta_rows)
            if keyword:
                keyword_store.insert(conn, [(d[0], d[2], d[3]) for d in docs])
            if keys:
                conn.execute(_insert_ignore(conn.dialect.name), [{"key": k} for k in keys])

    def rollback_after(self, gen: int) -> int:
        """Undo everything a writer did beyond the committed generation; returns rows undone."""
        d = documents.c
        with self.engine.begin() as conn:
            doomed = select(d.id).where(d.gen_added > gen)
            conn.execute(delete(meta).where(meta.c.doc_id.in_(doomed)))
            keyword_store.delete_where(conn, doomed)
            removed = conn.execute(delete(documents).where(d.gen_added > gen)).rowcount
            revived = conn.execute(
                update(documents).where(d.gen_deleted > gen).values(gen_deleted=None)
            ).rowcount
        return int(removed or 0) + int(revived or 0)

    def build_keywords(self) -> int:
        """(Re)build the keyword index from the stored texts, in one transaction; returns rows.

        Every physical text row is indexed (retired ones too, until purged): searches join
        with ``visible(gen)``, so what a generation sees is decided there, as for documents.
        """
        keyword_store.require_sqlite(self.engine.dialect.name)
        d = documents.c
        indexed = 0
        with self.engine.begin() as conn:
            keyword_store.create(conn)
            last = -1
            while True:
                batch = conn.execute(
                    select(d.id, d.modality, d.content)
                    .where(d.modality == "text", d.id > last)
                    .order_by(d.id)
                    .limit(CHUNK)
                ).fetchall()
                if not batch:
                    return indexed
                indexed += keyword_store.insert(conn, [tuple(r) for r in batch])
                last = batch[-1][0]

    def image_contents(
        self, gen: int, live_only: bool = False, endings: Sequence[str] | None = None
    ) -> list[str]:
        """Contents (paths) of image rows not retired at or before ``gen``: live ones, and
        ones an uncommitted write added or is retiring. With ``live_only``, those visible at
        ``gen``; with ``endings``, only contents ending so (plain text: no LIKE wildcards).
        One scan (content has no index); engine.blobs decides which are its files."""
        d = documents.c
        kept = visible(gen) if live_only else or_(d.gen_deleted.is_(None), d.gen_deleted > gen)
        query = select(d.content).where(d.modality == "image", kept)
        if endings is not None:
            query = query.where(or_(*[d.content.like(f"%{e}") for e in endings]))
        with self.engine.connect() as conn:
            return list(conn.execute(query.distinct()).scalars())

    def image_contents_of(self, ids: Sequence[int]) -> list[str]:
        """Contents (paths) of the image rows among ``ids``, whatever their generations."""
        d = documents.c
        found: list[str] = []
        with self.engine.connect() as conn:
            for chunk in _chunks([int(i) for i in ids], _chunk_size(conn, 1)):
                query = select(d.content).where(d.id.in_(chunk), d.modality == "image")
                found.extend(conn.execute(query).scalars())
        return found

    def max_generation(self) -> int:
        d = documents.c
        with self.engine.connect() as conn:
            a = conn.execute(select(func.max(d.gen_added))).scalar()
            # the WHERE lets SQLite answer from the partial index of retired rows
            b = conn.execute(
                select(func.max(d.gen_deleted)).where(d.gen_deleted.isnot(None))
            ).scalar()
        return max(a or 0, b or 0)

    def vacuum(self) -> None:
        """Give the space of purged rows back to the file system (SQLite keeps it otherwise)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")

    def purge_dead(self, upto_gen: int) -> int:
        """Physically drop rows retired at or before ``upto_gen`` (no snapshot needs them)."""
        d = documents.c
        with self.engine.begin() as conn:
            dead = select(d.id).where(d.gen_deleted <= upto_gen)
            conn.execute(delete(meta).where(meta.c.doc_id.in_(dead)))
            keyword_store.delete_where(conn, dead)
            return int(conn.execute(delete(documents).where(d.gen_deleted <= upto_gen)).rowcount)


def _bulk_insert(conn: Any, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """executemany straight to the driver: SQLAlchemy's per-row parameter processing costs
    more than SQLite's insert itself at tens of thousands of rows."""
    if not rows:
        return
    compiled = insert(table).compile(dialect=conn.dialect)
    names = [c.name for c in table.columns]
    if compiled.positional:
        order = [names.index(p) for p in compiled.positiontup]
        identity = order == list(range(len(names)))
        params: list[Any] = rows if identity else [tuple(row[i] for i in order) for row in rows]
    else:
        params = [dict(zip(names, row, strict=True)) for row in rows]
    conn.exec_driver_sql(str(compiled), params)


def _insert_ignore(dialect: str) -> Any:
    if dialect == "sqlite":
        return sqlite_insert(fields).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(fields).on_conflict_do_nothing()
    return insert(fields).prefix_with("IGNORE")


def _id_array(result: Any) -> np.ndarray:
    """One integer column as an array, fetched straight from the driver's cursor.

    A replay on open reads every live id when there is no snapshot; SQLAlchemy's per-row
    result processing cost 0.13 s of it at 100,000 ids, the driver's fetchall 0.05 s.
    """
    rows = result.cursor.fetchall() if result.cursor is not None else result.fetchall()
    return np.array(rows, dtype=np.int64).reshape(-1)


def _ids(conn: Any, query: Any) -> np.ndarray:
    """A one-column id query as an int64 array, without building a Row per result."""
    sql, params = _compiled(conn, query)
    cursor = conn.exec_driver_sql(sql, params)
    return np.array([r[0] for r in cursor.fetchall()], dtype=np.int64)


def _compiled(conn: Any, query: Any) -> tuple[str, Any]:
    """The SQL and driver parameters of a query, lists expanded (their count is what counts)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    return str(compiled), params


def _n_params(conn: Any, query: Any) -> int:
    return len(_compiled(conn, query)[1])


def _chunk_size(conn: Any, reserved: int) -> int:
    """Ids per statement beside ``reserved`` other parameters: CHUNK, or what the build allows.

    SQLite allows 32,766 bound parameters since 3.32 and 999 before, and a build may choose
    any other number; an id list past it failed with "too many SQL variables".
    """
    return max(1, min(CHUNK, _parameter_limit(conn) - reserved))


def _parameter_limit(conn: Any) -> int:
    if conn.dialect.name != "sqlite":
        return 65_535  # PostgreSQL's and MySQL's wire protocols
    dbapi = conn.connection.dbapi_connection
    if hasattr(dbapi, "getlimit"):  # Python 3.11+
        return int(dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
