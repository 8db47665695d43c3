"""A collection: one encoder, one vector index and one metadata store that commit together.

Every write follows the same protocol, so a process killed at any instruction leaves the
collection consistent:

1. exact vectors are appended to the vector tail and fsynced;
2. store rows for generation G+1 are written in one SQL transaction (invisible at G);
3. the in-memory index is updated and, when enough changed, snapshotted to ``index-<G+1>``;
4. the manifest naming G+1 atomically replaces the old one: this rename is the commit.

A writer that finds rows or vectors beyond the manifest's generation (a killed add) rolls them
back before doing anything else. Readers only ever look at what a manifest names.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from engine.documents import check_ids, check_metadata, check_texts, content_hash, default_text_id
from engine.encoders import IMAGE, TEXT, Encoder, check_modality, validate_vectors
from engine.errors import BadInput, CollectionLocked, SpaceMismatch
from engine.filters import parse_where
from engine.live import LiveView, exact_top_k, snapshot_path
from engine.manifest import Manifest, fsync_dir, read_manifest, write_manifest
from engine.registry import Registry
from engine.store import Document, NewRow, Store
from engine.vectors import VectorWriter

#: A filter matching at most this many documents is answered exactly from the stored vectors.
SELECTIVE_LIMIT = 20_000
#: Documents per commit inside one long add: what a crash can lose, and the index-save cadence.
COMMIT_EVERY = 20_000
#: Snapshot the index once this share of the collection changed since the last snapshot.
SNAPSHOT_RATIO = 0.5
SNAPSHOT_MIN_CHANGES = 1_000
#: Filters whose matching ids are remembered per generation.
FILTER_CACHE_SIZE = 64


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    content: str
    metadata: dict[str, Any]
    modality: str


@dataclass
class AddReport:
    """What an add did, item by item; the CLI prints it as the summary."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)

    def merge(self, other: AddReport) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.skipped.extend(other.skipped)


@dataclass(frozen=True)
class _Item:
    external_id: str
    modality: str
    content: str
    metadata: dict[str, Any]
    metadata_json: str
    source: Any  # what the encoder takes (text, or decoded image), or None with a vector
    vector: np.ndarray | None = None


class Collection:
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
        self.lock_timeout = lock_timeout
        self._filter_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = FileLock(str(folder / "write.lock"), timeout=lock_timeout)
        manifest = read_manifest(folder)
        self.store = Store(manifest.store_url or f"sqlite:///{folder / 'store.sqlite'}")
        self.view = LiveView(folder, self.store, registry)
        check_same_space(self.view.manifest, encoder)

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
        ids = [str(i) for i in ids]
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
    ) -> list[Hit]:
        """Top-k documents for a text, an image or a vector, optionally filtered by metadata."""
        given = [x is not None for x in (query, image, vector)]
        if sum(given) != 1:
            raise BadInput("search takes exactly one of: a text query, image=, vector=")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise BadInput(f"k must be a positive integer, got {k!r}")
        where = parse_where(where)
        q = self._query_vector(query, image, vector)
        m = self.view.refresh()
        if where is not None:
            self.store.check_fields(where)
        for _ in range(3):
            ids, scores = self._candidates(q, k, where, m)
            docs = self.store.fetch(ids, m.generation)
            if len(docs) == len(ids) or len(ids) == 0:
                break
            m = self.view.refresh()  # a concurrent compaction purged rows: look again
        return [
            Hit(docs[i].id, float(s), docs[i].content, docs[i].metadata, docs[i].modality)
            for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
            if i in docs
        ]

    def _query_vector(self, query: Any, image: Any, vector: Any) -> np.ndarray:
        if vector is not None:
            return validate_vectors(vector, self.dim, "vector")[0]
        modality = TEXT if query is not None else IMAGE
        check_modality(self.encoder, modality)
        if modality == TEXT and (not isinstance(query, str) or not query.strip()):
            raise BadInput("query: text is empty")
        return self.encoder.encode([query if modality == TEXT else image], modality)[0]

    def _candidates(
        self, q: np.ndarray, k: int, where: dict[str, Any] | None, m: Manifest
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self.view.load_index()
        if where is None:
            scores, ids = index.search(q[None, :], k)
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep]
        matching = self._matching(where, m.generation)
        if len(matching) <= SELECTIVE_LIMIT:
            if len(matching) == 0:
                return matching, np.zeros(0, dtype=np.float32)
            scores, ids = exact_top_k(self.view.vectors.get(matching), matching, q, k)
            return ids, scores
        # Broad filter: over-fetch from the index and widen until k matching documents are found.
        total = len(index)
        fetch = min(k * 8, total)
        while True:
            scores, ids = index.search(q[None, :], fetch)
            cand, cand_scores = ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]
            ok = set(self.store.matching_ids(where, m.generation, among=cand).tolist())
            keep = np.fromiter((i in ok for i in cand.tolist()), dtype=bool, count=len(cand))
            if keep.sum() >= k or fetch >= total:
                return cand[keep][:k], cand_scores[keep][:k]
            fetch = min(fetch * 4, total)

    def _matching(self, where: dict[str, Any], generation: int) -> np.ndarray:
        """Ids matching a filter (at most SELECTIVE_LIMIT + 1), memoised per generation.

        Chatbots repeat the same few filters (a tenant, a language), and a committed generation
        never changes, so the answer can be reused until the next commit.
        """
        key = (json.dumps(where, sort_keys=True), generation)
        found = self._filter_cache.get(key)
        if found is None:
            found = self.store.matching_ids(where, generation, limit=SELECTIVE_LIMIT + 1)
            self._filter_cache[key] = found
            while len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        else:
            self._filter_cache.move_to_end(key)
        return found

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Manifest]:
        """Hold the write lock, recover from any killed writer, and yield the committed state."""
        try:
            self._lock.acquire()
        except Timeout:
            raise CollectionLocked(
                f"collection {self.name!r} is being written by another process "
                f"(waited {self.lock_timeout:g} s); try again when it finishes"
            ) from None
        try:
            m = self.view.refresh()
            self._recover(m)
            yield m
        finally:
            self._lock.release()

    def _recover(self, m: Manifest) -> None:
        if self.store.max_generation() > m.generation:
            self.store.rollback_after(m.generation)
        VectorWriter(self.folder / "vectors", m.dim).truncate_uncommitted(m.vectors)
        keep = (
            {f"index-{m.snapshot_generation}.faiss"} if m.snapshot_generation is not None else set()
        )
        for path in self.folder.glob("index-*.faiss"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)

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
        items = self._prepare(texts, images, vectors, ids, metadata, report)
        with self._writing() as m:
            self._write_items(m, items, batch_size, progress, report)
        return report

    def _prepare(
        self, texts: Any, images: Any, vectors: Any, ids: Any, metadata: Any, report: AddReport
    ) -> list[_Item]:
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
        return [
            _Item(
                ext_ids[i],
                modality,
                contents[i],
                metas[i][0],
                metas[i][1],
                contents[i] if modality == TEXT else None,
                None if vecs is None else vecs[i],
            )
            for i in range(n)
        ]

    def _write_items(
        self,
        m: Manifest,
        items: list[_Item],
        batch_size: int | None,
        progress: bool,
        report: AddReport,
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
                b"" if it.vector is None else it.vector.tobytes(),
            )
            old = live.get(it.external_id)
            if old is not None and old[1] == h:
                report.unchanged += 1
            else:
                todo.append((it, h))
        for start in range(0, len(todo), COMMIT_EVERY):
            chunk = todo[start : start + COMMIT_EVERY]
            encoded, vectors, skipped = encode_items(
                self.encoder,
                [it for it, _ in chunk],
                batch_size,
                progress,
                offset=start,
                total=len(todo),
            )
            report.skipped.extend(skipped)
            chunk = [chunk[i] for i in encoded]
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
            m = self._commit(m, rows, vectors, retire)

    def delete(self, ids: Sequence[Any]) -> int:
        """Remove documents by id; returns how many existed. Unknown ids are not an error.

        Each call rewrites the index snapshot, so delete in batches rather than one by one.
        """
        ids = [str(i) for i in ids]
        with self._writing() as m:
            live = self.store.live_hashes(ids, m.generation)
            if live:
                # Snapshot at once: deleted vectors leave the index file and their rows leave the
                # store now, not at some later checkpoint (users delete for privacy reasons).
                retire = [v[0] for v in live.values()]
                self._commit(m, [], np.zeros((0, m.dim), np.float32), retire, force_snapshot=True)
        return len(live)

    def _commit(
        self,
        m: Manifest,
        rows: list[NewRow],
        vectors: np.ndarray,
        retire: list[int],
        force_snapshot: bool = False,
    ) -> Manifest:
        gen = m.generation + 1
        writer = VectorWriter(self.folder / "vectors", m.dim)
        files = writer.append(m.vectors, vectors) if len(rows) else m.vectors
        self.store.write(gen, rows, retire)
        index = self.view.load_index()
        if retire:
            index.remove(np.asarray(retire, dtype=np.int64))
        if rows:
            index.add(np.asarray([r.internal_id for r in rows], dtype=np.int64), vectors)
        changes = m.changes_since_snapshot + len(rows) + len(retire)
        count = m.count + len(rows) - len(retire)
        snapshot_gen = m.snapshot_generation
        if force_snapshot or changes >= max(SNAPSHOT_MIN_CHANGES, SNAPSHOT_RATIO * count):
            self._save_snapshot(index, gen)
            snapshot_gen, changes = gen, 0
        new = m.evolve(
            generation=gen,
            vectors=files,
            next_id=m.next_id + len(rows),
            count=count,
            snapshot_generation=snapshot_gen,
            changes_since_snapshot=changes,
            index={**m.index, "state": index.state()},
        )
        write_manifest(self.folder, new)
        self.view.adopt(new, index)
        if snapshot_gen != m.snapshot_generation:
            if m.snapshot_generation is not None:
                snapshot_path(self.folder, m.snapshot_generation).unlink(missing_ok=True)
            self.store.purge_dead(snapshot_gen)
        return new

    def _save_snapshot(self, index: Any, gen: int) -> None:
        path = snapshot_path(self.folder, gen)
        tmp = path.with_name(f".{path.name}.tmp")
        index.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def checkpoint(self) -> None:
        """Snapshot the index now, so the next cold open replays nothing."""
        with self._writing() as m:
            if m.changes_since_snapshot or m.snapshot_generation is None:
                self._commit(m, [], np.zeros((0, m.dim), np.float32), [], force_snapshot=True)

    def close(self) -> None:
        self.store.close()


def check_same_space(manifest: Manifest, encoder: Encoder) -> None:
    stored = manifest.encoder["fingerprint"]
    current = encoder.fingerprint
    if stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise SpaceMismatch(
            f"collection {manifest.name!r} was built with encoder {stored.get('encoder')!r} "
            f"in another embedding space (differs in: {', '.join(diff)}); "
            f"use the same encoder and options, or create a new collection"
        )
