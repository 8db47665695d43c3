"""A collection: one encoder, one vector index and one metadata store that commit together.

This module is the public face (add, search, delete, maintenance); the write protocol lives in
``engine.commit``, query planning in ``engine.search``, index upkeep in ``engine.maintenance``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import hybrid, maintenance, recall
from engine.blobs import Blobs
from engine.commit import SNAPSHOT_MIN_CHANGES, Change, Writer
from engine.documents import (
    check_ids,
    check_metadata,
    check_texts,
    content_hash,
    default_text_id,
    lookup_ids,
)
from engine.encoders import IMAGE, TEXT, Encoder, check_modality, validate_vectors
from engine.errors import BadInput, CorruptCollection, SpaceMismatch
from engine.filters import parse_where, uses_text
from engine.keyword_store import require_sqlite
from engine.limits import MAX_K, check_k
from engine.live import LiveView
from engine.manifest import Manifest, read_manifest
from engine.min_score import check_min_score, resolve_min_score
from engine.recall_jobs import RecallKeeper
from engine.registry import Registry
from engine.search import Planner
from engine.store import Document, NewRow, Store

#: Documents per commit inside one long add: what a crash can lose, and the index-save cadence.
COMMIT_EVERY = 20_000


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    content: str
    metadata: dict[str, Any]
    modality: str
    #: Cosine similarity of the query and the document in the collection's space (the tuned
    #: one when tuned), None where only the keyword side found the hit. Equal to ``score`` for
    #: vector search; a fused hybrid score is on another scale, and ``min_score`` always applies
    #: to this.
    similarity: float | None = None
    #: The keyword side's score (-bm25, higher is better), None where it did not find the hit.
    keyword_score: float | None = None


@dataclass
class AddReport:
    """What an add did, item by item; the CLI prints it as the summary."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Items sent through an encoder on a cluster (``add_dataset``); rows found stored
    #: unchanged before encoding are not, which is what makes re-running a cut-off add cheap.
    encoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)

    def merge(self, other: AddReport) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.encoded += other.encoded
        self.skipped.extend(other.skipped)


@dataclass(frozen=True, slots=True)  # one per added item: no __dict__ each
class _Item:
    external_id: str
    modality: str
    content: str
    metadata: dict[str, Any]
    metadata_json: str
    source: Any  # what the encoder takes (text, or decoded image), or None with a vector
    position: int = 0  # in the add call, i.e. the row of its vector in a vectors= array


class Collection:
    #: Most hits one search may ask for (BadInput above it); set it on a handle to raise it.
    max_k: int = MAX_K

    def __init__(
        self,
        folder: Path,
        encoder: Encoder,
        registry: Registry,
        lock_timeout: float = 30.0,
    ) -> None:
        self.folder = folder
        self.name = folder.name
        self.encoder = encoder
        self.registry = registry
        manifest = read_manifest(folder)
        check_same_space(manifest, encoder)
        self.store = open_store(folder, manifest)
        self.view = LiveView(folder, self.store, registry)
        self.view.load_index()  # open means ready to serve: damage is reported here, not later
        self.planner = Planner(self.store)
        self.writer = Writer(folder, self.store, self.view, lock_timeout)
        self.blobs = Blobs(folder, self.store, lock_timeout)
        self.writer.blobs = self.blobs  # stored image files follow their rows
        self.recall = RecallKeeper(self.view, self.writer)
        self._tuned: Any = None  # the TunedEncoder of a `tune --full` space, by weights

    # -- reading ------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        return self.view.refresh()

    @property
    def dim(self) -> int:
        return self.view.manifest.dim

    def count(self) -> int:
        return self.manifest.count

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """Documents by id, ``None`` for ids not in the collection."""
        ids = lookup_ids(ids)
        found = self.store.get(ids, self.manifest.generation)
        return [found.get(i) for i in ids]

    def search(
        self,
        query: str | None = None,
        *,
        image: Any = None,
        vector: Any = None,
        k: int = 10,
        where: dict[str, Any] | str | None = None,
        modality: str | None = None,
        min_score: float | str | None = None,
        mode: str | None = None,
        alpha: float | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """Top-k documents for a text, an image or a vector, optionally filtered by metadata.

        ``modality="image"`` keeps only images (a collection of twin towers holds both).
        ``min_score`` drops hits whose similarity is below it; ``"auto"`` is the threshold
        `tune` calibrated. On a tuned collection ``vector=`` is a vector of the encoder's
        space (the base encoder's; after `tune --full` the tuned encoder's): it goes through
        the head like an encoded query.
        ``mode``: "hybrid" (the default for texts where the collection has a keyword index),
        "vector" or "keyword"; ``alpha`` weighs the vector side of a hybrid search (0..1) and
        ``fusion`` ("score" or "rrf") says how the sides are fused (engine/hybrid.py).
        """
        given = [x is not None for x in (query, image, vector)]
        if sum(given) != 1:
            raise BadInput("search takes exactly one of: a text query, image=, vector=")
        check_k(k, self.max_k)
        where = with_modality(parse_where(where), modality)
        if self._mode(mode, query is not None) != "vector":
            if not isinstance(query, str) or not query.strip():
                raise BadInput("query: text is empty")
            return self._search_texts([query], k, where, mode, alpha, fusion, None, min_score)[0]
        if query is not None:
            return self._search_vectors(None, k, where, min_score, texts=[query])[0]
        q = self._query_vector(query, image, vector)
        return self._search_vectors(q[None, :], k, where, min_score)[0]

    def search_many(
        self,
        queries: Sequence[str] | None = None,
        *,
        images: Sequence[Any] | None = None,
        vectors: Any = None,
        k: int = 10,
        where: dict[str, Any] | str | None = None,
        modality: str | None = None,
        batch_size: int | None = None,
        min_score: float | str | None = None,
        mode: str | None = None,
        alpha: float | None = None,
        fusion: str | None = None,
    ) -> list[list[Hit]]:
        """Search many queries at once: encoded in batches, one index call when unfiltered."""
        if sum(x is not None for x in (queries, images, vectors)) != 1:
            raise BadInput("search_many takes exactly one of: queries=, images=, vectors=")
        check_k(k, self.max_k)
        where = with_modality(parse_where(where), modality)
        if self._mode(mode, queries is not None) != "vector":
            return self._search_texts(
                list(queries), k, where, mode, alpha, fusion, batch_size, min_score
            )
        if vectors is not None:
            q = validate_vectors(vectors, self.dim, "vectors")
        elif queries is not None:
            texts = list(queries)
            check_query_texts(texts)
            return self._search_vectors(None, k, where, min_score, texts, batch_size)
        else:
            items = list(images)
            check_modality(self.encoder, IMAGE)
            step = max(1, batch_size or self.encoder.batch_size)
            parts = [
                self.encoder.encode(items[s : s + step], IMAGE) for s in range(0, len(items), step)
            ]
            q = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        return self._search_vectors(q, k, where, min_score)

    def answer(
        self,
        query: str | None = None,
        *,
        image: Any = None,
        vector: Any = None,
        where: dict[str, Any] | str | None = None,
        min_score: float | str = "auto",
        mode: str | None = "vector",
    ) -> Hit | None:
        """The best hit if it clears the threshold, else None: "I don't know", not a guess.

        Vector mode by default: `tune` calibrates the threshold on the top vector hit, and a
        hybrid search's top hit is ranked by a fused score the threshold was not measured on.
        """
        if query is None:
            mode = None  # images and vectors search by vector anyway
        hits = self.search(
            query, image=image, vector=vector, k=1, where=where, min_score=min_score, mode=mode
        )
        return hits[0] if hits else None

    def tune(self, **options: Any) -> Any:
        """Train a head on this collection's vectors; see :func:`engine.tune.run.tune`."""
        from engine.tune.run import tune

        result = tune(self, **options)
        self.recall.poke()  # a new space: a new index to measure
        return result

    def export_encoder(self, directory: str | os.PathLike[str]) -> Path:
        """Write this collection's text query path (encoder as tuned, head) as a SavedModel;
        see :func:`engine.tune.export.export_text_path`."""
        from engine.tune.export import export_text_path

        return export_text_path(self, directory)

    def untune(self) -> Manifest:
        """Back to the base encoder's space, as a new generation (no re-encoding)."""
        from engine.tune.run import untune

        result = untune(self)
        self.recall.poke()
        return result

    def _encode_texts(
        self, items: list[Any], batch_size: int | None, top: Any = False
    ) -> tuple[np.ndarray, str | None]:
        """Query vectors of ``items`` and the tuned weights they went through (None: base).

        ``top``: the sha256 of the weights a searched generation uses (a search's retry after
        a tune landed); by default the newest generation's.
        """
        check_query_texts(items)
        check_modality(self.encoder, TEXT)
        encoder, sha = self._text_encoder(top)
        step = max(1, batch_size or self.encoder.batch_size)
        parts = [encoder.encode(items[s : s + step], TEXT) for s in range(0, len(items), step)]
        return (np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)), sha

    def _text_encoder(self, top: Any = False) -> tuple[Any, str | None]:
        """The encoder texts enter this collection's space through: the base one, or after
        `tune --full` the base one with the tuned top weights (engine.tune.space)."""
        if top is False:
            self.view.refresh()
        current = self.view.top
        if current is None or top is None:
            return self.encoder, None
        from engine.tune.space import TunedEncoder

        tuned = self._tuned
        if tuned is None or tuned.sha256 != current[0]:
            tuned = self._tuned = TunedEncoder(self.encoder, current[1], current[0])
        return tuned, current[0]

    def _mode(self, mode: str | None, text_query: bool) -> str:
        """The search mode: keywords take part only for text queries on a keyword index."""
        keyword = self.manifest.keyword is not None
        if mode is None:
            if not (text_query and keyword):
                return "vector"
            return "hybrid" if TEXT in self.encoder.modalities else "keyword"
        if mode not in hybrid.MODES:
            raise BadInput(f"mode must be one of {', '.join(hybrid.MODES)}, got {mode!r}")
        if mode != "vector":
            if not text_query:
                raise BadInput(
                    f"mode={mode!r} needs a text query (images and vectors search by vector)"
                )
            self._require_keywords(f"mode={mode!r}")
        return mode

    def _require_keywords(self, what: str) -> None:
        if self.manifest.keyword is None and TEXT not in self.encoder.modalities:
            raise BadInput(f"{what}: collection {self.name!r} has no keyword index (no texts)")
        try:
            self._require_keywords_possible()
        except BadInput as exc:
            raise BadInput(f"{what}: {exc}") from None
        if self.manifest.keyword is None:
            raise BadInput(
                f"{what}: collection {self.name!r} has no keyword index; build it with "
                f"`hubsearch reindex {self.name} --keyword`"
            )

    def _check_where(self, where: dict[str, Any] | None) -> None:
        if where is not None:
            self.store.check_fields(where)
            if uses_text(where):
                self._require_keywords("where: $text")

    def _search_texts(
        self,
        texts: list[Any],
        k: int,
        where: dict[str, Any] | None,
        mode: str | None,
        alpha: float | None,
        fusion: str | None,
        batch_size: int | None = None,
        min_score: Any = None,
    ) -> list[list[Hit]]:
        from engine import hybrid_search

        mode = self._mode(mode, True)
        alpha, fusion = hybrid.check_alpha(alpha), hybrid.check_fusion(fusion)
        check_min_score(min_score)
        if min_score is not None and mode == "keyword":
            raise BadInput(
                "min_score applies to vector similarity, which a keyword search has none of: "
                "use mode='hybrid' or 'vector'"
            )
        self._check_where(where)
        check_query_texts(texts)
        q, top = self._encode_texts(texts, batch_size) if mode == "hybrid" else (None, None)

        def requery(served: Any) -> np.ndarray | None:
            """The queries again when a `tune --full` landed since they were encoded."""
            if q is None or served.top == top:
                return q
            return self._encode_texts(texts, batch_size, served.top)[0]

        found, docs = hybrid_search.run(
            self.view, self.planner, self.store, texts, requery, k, where, alpha, fusion, min_score
        )
        return [
            [
                Hit(d.id, s, d.content, d.metadata, d.modality, similarity=sim, keyword_score=kw)
                for i, s, sim, kw in ranked.rows
                if (d := docs.get(i)) is not None
            ]
            for ranked in found
        ]

    def _search_vectors(
        self,
        q: np.ndarray | None,
        k: int,
        where: dict[str, Any] | None,
        min_score: Any = None,
        texts: list[str] | None = None,
        batch_size: int | None = None,
    ) -> list[list[Hit]]:
        """Search by vectors ``q``, or by ``texts`` encoded in the space of the searched
        generation (after `tune --full` its tuned encoder's)."""
        check_min_score(min_score)
        self._check_where(where)
        top: Any = False
        if texts is not None:
            q, top = self._encode_texts(texts, batch_size)
        for _ in range(3):
            with self.view.reading() as served:
                if texts is not None and served.top != top:  # a tune landed meanwhile
                    q, top = self._encode_texts(texts, batch_size, served.top)
                assert q is not None
                # The query enters the space of the generation it searches, never another's.
                mapped = q if served.head is None else served.head.apply(q)
                floor = resolve_min_score(min_score, served.manifest)
                # More hits than documents cannot exist: result arrays are sized by k up front.
                kk = min(k, max(served.manifest.count, 1))
                found = self.planner.candidates_many(mapped, kk, where, served)
            wanted = np.unique(np.concatenate([ids for ids, _ in found]) if found else [])
            docs = self.store.fetch(wanted.astype(np.int64), served.manifest.generation)
            if len(docs) == len(wanted):
                break
            # A concurrent commit purged rows of the generation we searched: search again.
        return [
            [
                Hit(
                    docs[i].id,
                    float(s),
                    docs[i].content,
                    docs[i].metadata,
                    docs[i].modality,
                    similarity=float(s),
                )
                for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
                if i in docs and (floor is None or s >= floor)
            ]
            for ids, scores in found
        ]

    def _query_vector(self, query: Any, image: Any, vector: Any) -> np.ndarray:
        if vector is not None:
            return validate_vectors(vector, self.dim, "vector")[0]
        modality = TEXT if query is not None else IMAGE
        check_modality(self.encoder, modality)
        if modality == TEXT and (not isinstance(query, str) or not query.strip()):
            raise BadInput("query: text is empty")
        return self.encoder.encode([query if modality == TEXT else image], modality)[0]

    # -- writing ------------------------------------------------------------------------------

    def add(
        self,
        texts: Sequence[Any] | None = None,
        *,
        images: Sequence[Any] | None = None,
        vectors: Any = None,
        ids: Sequence[Any] | None = None,
        metadata: Sequence[Any] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AddReport:
        """Add or replace (by id) documents; unchanged ones are skipped, bad images reported.

        Texts and vectors are validated as a whole before anything is written: one bad item
        fails the call and stores nothing. Undecodable images are skipped and reported instead,
        since one corrupt photo should not stop a folder import.
        """
        if texts is not None and images is not None:
            raise BadInput("add takes texts= or images=, not both")
        if texts is None and images is None and vectors is None:
            raise BadInput("add needs texts=, images= or vectors=")
        report = AddReport()
        items, given = self._prepare(texts, images, vectors, ids, metadata, report)
        # A blob named here must not be removed between encoding it and the commit.
        blobs = [it.content for it in items if it.modality == IMAGE]
        with self.blobs.using(blobs), self.writer.writing() as m:
            self._write_items(m, items, given, batch_size, progress, report)
        self.recall.poke()
        return report

    def add_encoded(
        self,
        texts: Sequence[str],
        vectors: Any,
        ids: Sequence[Any],
        metadata: Sequence[Any] | None,
        fingerprint: dict[str, Any],
        *,
        modality: str = TEXT,
    ) -> AddReport:
        """Add texts (or images) with the vectors this collection's encoder gave elsewhere.

        Encoder actors on a cluster (``engine.distributed``) encode; this process commits. The
        items are hashed as an ordinary add hashes them (without the vector), so adding the
        same rows in process afterwards, or re-running an interrupted distributed add, finds
        them unchanged. With ``modality="image"``, ``texts`` are the images' paths, stored as
        an in-process add of those files stores them. ``fingerprint`` is the encoder's that
        made ``vectors``: another embedding space is refused.
        """
        m = self.manifest
        check_same_fingerprint(m.name, m.encoder["fingerprint"], fingerprint)
        if modality not in (TEXT, IMAGE):
            raise BadInput(f"modality must be 'text' or 'image', got {modality!r}")
        report = AddReport()
        images = texts if modality == IMAGE else None
        texts = None if images is not None else texts
        items, given = self._prepare(texts, images, vectors, ids, metadata, report)
        blobs = [it.content for it in items if it.modality == IMAGE]
        with self.blobs.using(blobs), self.writer.writing() as m:
            self._write_items(m, items, given, None, False, report, own_vectors=True)
        self.recall.poke()
        return report

    def add_dataset(self, data: Any, **options: Any) -> AddReport:
        """Encode a Ray dataset (or a Parquet/JSONL/CSV path, or a folder of images) on a Ray
        cluster, commit here.

        Keywords: ``text``, ``id``, ``metadata`` (fields), ``actors``, ``gpus_per_actor``,
        ``batch_size``, ``chunk`` (rows per commit), ``sidecar`` (image metadata). Images get
        the ids, metadata and decoding rules of ``hubsearch add``: one that cannot be decoded
        is skipped and reported in ``AddReport.skipped``. Needs ``hubsearch[ray]``; see
        ``engine.distributed`` for how rows are checked, shipped and resumed.
        """
        from engine.distributed import add_dataset

        return add_dataset(self, data, **options)

    def _prepare(
        self, texts: Any, images: Any, vectors: Any, ids: Any, metadata: Any, report: AddReport
    ) -> tuple[list[_Item], np.ndarray | None]:
        """The validated items, and the validated ``vectors=`` array (None without one)."""
        if vectors is not None:
            vecs = validate_vectors(vectors, self.dim, "vectors")
            n = len(vecs)
        else:
            vecs = None
            n = len(texts if texts is not None else images)
        if texts is not None:
            modality = TEXT
            contents = check_texts(texts, [str(i) for i in ids] if ids else [""] * len(texts))
            if len(contents) != n:
                raise BadInput(f"vectors: got {n} vectors for {len(contents)} texts")
            default_ids = [default_text_id(t) for t in contents]
        elif images is not None:
            modality = IMAGE
            contents = [os.path.abspath(os.fspath(p)) for p in images]
            if len(contents) != n:
                raise BadInput(f"vectors: got {n} vectors for {len(contents)} images")
            default_ids = contents
        else:
            modality, contents, default_ids = "vector", [""] * n, None
            if ids is None:
                raise BadInput("add with vectors= alone needs ids=")
        if vecs is None:
            check_modality(self.encoder, modality)
        ext_ids = check_ids(ids, n, default_ids or [])
        metas = check_metadata(metadata, n, ext_ids)
        items = [
            _Item(
                ext_ids[i],
                modality,
                contents[i],
                metas[i][0],
                metas[i][1],
                contents[i] if modality == TEXT else None,
                i,
            )
            for i in range(n)
        ]
        return items, vecs

    def _write_items(
        self,
        m: Manifest,
        items: list[_Item],
        given: np.ndarray | None,
        batch_size: int | None,
        progress: bool,
        report: AddReport,
        own_vectors: bool = False,
    ) -> None:
        from engine.pipeline import encode_items

        live = (
            self.store.live_hashes([it.external_id for it in items], m.generation)
            if m.count
            else {}
        )
        todo: list[tuple[_Item, str]] = []
        for it in items:
            h = content_hash(
                it.modality,
                it.content,
                it.metadata_json,
                b"" if given is None or own_vectors else given[it.position].tobytes(),
            )
            old = live.get(it.external_id)
            if old is not None and old[1] == h:
                report.unchanged += 1
            else:
                todo.append((it, h))
        if todo:  # announce the whole add: the index sizes itself (and `auto` its kind) once
            self.view.reserve(len(todo))
        for start in range(0, len(todo), COMMIT_EVERY):
            chunk = todo[start : start + COMMIT_EVERY]
            encoded, vectors, skipped = encode_items(
                self.encoder,
                [it for it, _ in chunk],
                batch_size,
                progress,
                offset=start,
                total=len(todo),
                given=given,
            )
            report.skipped.extend(skipped)
            chunk = [chunk[i] for i in encoded]
            tuned = self._tuned_vectors(m, [it for it, _ in chunk], given, own_vectors)
            rows = [
                NewRow(
                    m.next_id + j,
                    it.external_id,
                    it.modality,
                    it.content,
                    it.metadata,
                    it.metadata_json,
                    h,
                )
                for j, (it, h) in enumerate(chunk)
            ]
            retire = [live[it.external_id][0] for it, _ in chunk if it.external_id in live]
            report.updated += len(retire)
            report.added += len(rows) - len(retire)
            m = self.writer.commit(
                m, Change(rows=rows, vectors=vectors, retire=retire, tuned_vectors=tuned)
            )
            del rows, vectors  # before the next chunk is encoded: one chunk in memory at a time
            m = maintenance.rebuild_if_needed(self.writer, self.store, m)
        if m.changes_since_snapshot >= SNAPSHOT_MIN_CHANGES and not (
            self.view.load_index().replay_is_cheap()
        ):
            # A graph would otherwise be partly rebuilt by every process that opens it next.
            self.writer.commit(m, Change(force_snapshot=True))

    def _tuned_vectors(
        self, m: Manifest, items: list[_Item], given: Any, own_vectors: bool
    ) -> np.ndarray | None:
        """After `tune --full`: the items through the tuned encoder too (None otherwise).

        The base vectors are stored as ever (untune needs them); the tuned ones are what the
        index holds. Only texts have them: a vector or an image cannot enter a tuned encoder.
        """
        if self.view.top is None:
            return None
        if (given is not None and not own_vectors) or any(it.modality != TEXT for it in items):
            raise BadInput(
                f"collection {m.name!r} is fine-tuned (tune --full) and takes texts only, "
                f"encoded by its tuned encoder; untune it to add vectors or images"
            )
        encoder, _ = self._text_encoder(top=m.tune["encoder"]["sha256"])  # type: ignore[index]
        return encoder.encode([it.content for it in items], TEXT)

    def delete(self, ids: Sequence[Any]) -> int:
        """Remove documents by id; returns how many existed. Unknown ids are not an error.

        Each call rewrites the index snapshot, so delete in batches rather than one by one.
        """
        ids = lookup_ids(ids)
        with self.writer.writing() as m:
            live = self.store.live_hashes(ids, m.generation)
            if live:
                # Snapshot at once: deleted vectors leave the index file and their rows leave the
                # store now, not at some later checkpoint (users delete for privacy reasons).
                retire = [v[0] for v in live.values()]
                m = self.writer.commit(m, Change(retire=retire, force_snapshot=True))
                maintenance.rebuild_if_needed(self.writer, self.store, m)
        self.recall.poke()
        return len(live)

    # -- upkeep (never calls the encoder) -----------------------------------------------------

    def checkpoint(self) -> None:
        """Snapshot the index now, so the next cold open replays nothing."""
        with self.writer.writing() as m:
            if m.changes_since_snapshot or m.snapshot_generation is None:
                self.writer.commit(m, Change(force_snapshot=True))

    def reindex(self, index: str, options: dict[str, Any] | None = None) -> Manifest:
        """Switch to another index kind (or parameters), built from the stored vectors.

        Readers keep searching the old index until the new one is committed. Recall options
        (``recall``, ``recall_sample``, ``recall_growth``) among ``options`` change the
        promise; the new index is measured in the background (see :meth:`wait_for_recall`).
        """
        self.registry.index_class(index)  # fail before taking the lock
        params, settings = recall.split_options(options)
        settings = recall.check_options(settings)
        with self.writer.writing() as m:
            new = maintenance.reindex(
                self.writer, self.registry, self.store, m, index, params,
                recall={**(m.recall or {}), **settings} if settings else None,
            )  # fmt: skip
        self.recall.poke()
        return new

    def set_recall(
        self,
        target: float | None = None,
        *,
        sample: int | None = None,
        growth: float | None = None,
    ) -> Manifest:
        """Change the recall promise without rebuilding: the index is measured again for it.

        ``target``: recall@10 against exact search (default 0.95); ``sample``: queries per
        measurement; ``growth``: measure again once the collection grew by this factor.
        """
        given = {"recall": target, "recall_sample": sample, "recall_growth": growth}
        settings = recall.check_options({k: v for k, v in given.items() if v is not None})
        with self.writer.writing() as m:
            new = self.writer.commit(
                m,
                Change(
                    recall={**(m.recall or {}), **settings},
                    event={"event": "recall-settings", **settings},
                ),
            )
        self.recall.poke()
        return new

    def wait_for_recall(self, progress: Any = None) -> dict[str, Any] | None:
        """Finish the recall measurement that is due (or running, here or in another process)
        and return the collection's last measurement (None when it has none: below 200 vectors,
        or while the index searches exactly). ``progress(done, total)`` is called as it goes.
        """
        return self.recall.wait(progress)

    def build_keywords(self) -> Manifest:
        """Build the keyword index from the stored texts (no re-encoding), as one commit.

        For collections made before keyword indexes existed; they search hybrid afterwards.
        """
        self._require_keywords_possible()
        with self.writer.writing() as m:
            return maintenance.build_keywords(self.writer, self.store, m)

    def _require_keywords_possible(self) -> None:
        if IMAGE in self.encoder.modalities and TEXT not in self.encoder.modalities:
            raise BadInput(f"collection {self.name!r} holds only images: no words to index")
        require_sqlite(self.store.engine.dialect.name)

    def compact(self) -> Manifest:
        """Drop the vectors and rows of deleted documents from disk and rebuild the index."""
        with self.writer.writing() as m:
            new = maintenance.compact(self.writer, self.registry, self.store, m)
        self.blobs.sweep()  # also the orphans a killed write left (see engine.blobs)
        self.recall.poke()
        return new

    def close(self) -> None:
        self.recall.background = False
        self.recall.stop()
        self.store.close()


def open_store(folder: Path, manifest: Manifest) -> Store:
    """The collection's store; a missing SQLite file is damage, never silently recreated."""
    if manifest.store_url is None:
        path = folder / "store.sqlite"
        if not path.exists():
            raise CorruptCollection(
                f"{path} is missing: the documents cannot be rebuilt from the vectors alone; "
                f"restore it from a backup"
            )
        return Store(f"sqlite:///{path}")
    return Store(manifest.store_url)


def check_query_texts(texts: Sequence[Any]) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"query {i}: text is empty")


def with_modality(where: dict[str, Any] | None, modality: str | None) -> dict[str, Any] | None:
    if modality is None:
        return where
    if modality not in (TEXT, IMAGE):
        raise BadInput(f"modality must be 'text' or 'image', got {modality!r}")
    return {"$and": [where, {"$modality": modality}]} if where else {"$modality": modality}


def check_same_space(manifest: Manifest, encoder: Encoder) -> None:
    check_same_fingerprint(manifest.name, manifest.encoder["fingerprint"], encoder.fingerprint)


def check_same_fingerprint(name: str, stored: dict[str, Any], current: dict[str, Any]) -> None:
    if stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise SpaceMismatch(
            f"collection {name!r} was built with encoder {stored.get('encoder')!r} "
            f"in another embedding space (differs in: {', '.join(diff)}); "
            f"use the same encoder and options, or create a new collection"
        )
