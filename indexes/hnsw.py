"""`hnsw`: a FAISS HNSW graph over the exact vectors, for fast search in the middle sizes.

FAISS cannot take a node out of an HNSW graph, so removal masks the node (see
:class:`indexes._idmap.IdMap`) and every search excludes masked nodes with an id selector; once
the masked share passes ``max_deleted`` :meth:`needs_rebuild` says so and the engine rebuilds the
graph from its exact vectors. The graph stores the exact vectors itself, so a filter that leaves
few ids, or a walk that comes back with fewer than k hits, is answered by exact scoring here,
without the engine's lookup.

On disk the vectors are kept once: the engine saves through :meth:`save_sharing_vectors` when
its exact-vector log holds the very vectors of the graph (an untuned collection), and the
snapshot then carries the graph, ids and mask without FAISS's flat storage (at 100,000 x 512,
about 30 MB instead of 240). :meth:`attach_vectors`, which the engine calls right after loading,
reads the storage back from the log by position, through the log's chunk checksums. Snapshots
written with their storage (older versions, tuned collections) load as they are.

Options: ``M`` (graph degree, 32), ``efConstruction`` (80: FAISS's 40 built a graph that reached
recall@10 0.81 at efSearch 64 and 0.95 only at 512 on a million clustered 512-d vectors; 80 gives
0.985 at 128, for twice the build time), ``efSearch`` (128), ``max_deleted``
(share of masked nodes that asks for a rebuild, 0.2), ``exact_filter`` (a filter admitting less
than this share of the live ids is scored exactly instead of walked, 0.04: below it a walk's
recall falls off while an exact scan of the few admitted vectors stays cheap).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.options import option_float, option_int, reject_unknown_options
from indexes._exact import chunks, fetched, reserve_storage, score_rows, topk
from indexes._idmap import IdMap
from indexes._select import bitmap, bitmap_selector
from indexes._snapshot import SnapshotReader, SnapshotWriter, open_snapshot, write_snapshot
from indexes._threads import faiss_threads, for_rows
from indexes.base import VectorIndex, VectorLookup, as_ids, as_vectors, empty_result

OPTIONS = {"M", "efConstruction", "efSearch", "max_deleted", "exact_filter"}
#: efSearch values a recall target chooses among; 1,024 bounds the latency (p50 about 5 ms
#: at 300,000 x 512 on one core of this machine, see docs/indexes.md).
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: A walk that returned fewer than k hits is retried once with this many times the beam.
_WIDEN = 4
#: Filters leaving at most this many ids are scored exactly: cheaper than any walk.
_EXACT_ROWS = 4096
#: A filter admitting a share s of the nodes walks with a beam of _FILTER_EF * k / s nodes:
#: FAISS walks the graph as if unfiltered and keeps only admitted nodes, so the beam must
#: reach past the k / s nearest nodes to meet the k nearest admitted ones.
_FILTER_EF = 3.0
_MAX_FILTER_EF = 4096


class HnswIndex(VectorIndex):
    """IndexHNSWFlat (inner product) labelled by position, plus an :class:`IdMap`."""

    kind = "hnsw"

    def __init__(self, dim: int, **params: Any) -> None:
        reject_unknown_options(params, OPTIONS, "index 'hnsw'")
        super().__init__(dim, **params)
        self.M = option_int(params, "M", 32)
        self.ef_construction = option_int(params, "efConstruction", 80)
        self.ef_search = option_int(params, "efSearch", 128)
        self.max_deleted = option_float(params, "max_deleted", 0.2)
        self.exact_filter = option_float(params, "exact_filter", 0.04)
        if min(self.M, self.ef_construction, self.ef_search) < 1:
            raise BadInput("index 'hnsw': M, efConstruction and efSearch must be positive")
        if not 0 < self.max_deleted <= 1 or not 0 <= self.exact_filter <= 1:
            raise BadInput("index 'hnsw': max_deleted is in (0, 1], exact_filter in [0, 1]")
        self._graph: Any = None  # built on the first add, so construction stays cheap
        self._ids = IdMap()

    # ------------------------------------------------------------------ writes

    def _new_graph(self) -> Any:
        import faiss

        graph = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        return graph

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_ids(ids)
        if len(ids) == 0:
            return
        vectors = as_vectors(vectors, self.dim)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        if self._graph is None:
            self._graph = self._new_graph()
        self._ready()
        self._ids.append(ids)  # raises before the graph changes when an id is live
        with faiss_threads(for_rows(len(ids))):
            self._graph.add(vectors)

    def remove(self, ids: np.ndarray) -> None:
        self._ids.remove(as_ids(ids))

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with exactly ``ids``/``vectors`` (a memmap is read in chunks).

        The new graph is built aside and swapped in at the end, so a failure leaves the old one.
        """
        empty = self._graph is not None and self._graph.ntotal == 0 and self._has_storage()
        graph = self._graph if empty else self._new_graph()  # keep what reserve() sized
        _size_graph(graph, len(ids), self.dim)
        idmap = IdMap()
        try:
            for part_ids, part in chunks(ids, vectors, self.dim):
                idmap.append(part_ids)
                graph.add(part)
        except BaseException:
            if empty:
                graph.reset()  # the old contents were this empty graph: leave it empty
            raise
        self._graph, self._ids = graph, idmap

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return self._ids.live_count

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._ids.live_ids()

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if k <= 0 or len(self) == 0:
            return empty_result(len(queries), max(k, 0))
        ef = self.ef_search
        if allowed_ids is None:
            if self._ids.deleted_count == 0:
                positions, bits = None, None
            else:
                positions, bits = None, self._ids.live_bitmap()
            wanted = min(k, len(self))
        else:
            positions = self._ids.positions(as_ids(allowed_ids))
            wanted = min(k, len(positions))
            if wanted == 0:
                return empty_result(len(queries), k)
            share = len(positions) / len(self)
            if len(positions) <= max(k, _EXACT_ROWS) or share < self.exact_filter:
                return self._exact(queries, k, positions)
            bits = bitmap(positions, self._ids.total)
            ef = int(min(_MAX_FILTER_EF, max(self.ef_search, _FILTER_EF * k / share)))
        scores, labels = self._walk(queries, k, ef, bits)
        short = (labels >= 0).sum(axis=1) < wanted
        if short.any():  # a masked or filtered walk can stall: widen once, then score exactly
            rows = np.flatnonzero(short)
            scores[rows], labels[rows] = self._walk(queries[rows], k, ef * _WIDEN, bits)
            short[rows] = (labels[rows] >= 0).sum(axis=1) < wanted
        if short.any():
            rows = np.flatnonzero(short)
            if positions is None:
                positions = np.flatnonzero(self._ids.live)
            exact_scores, exact_ids = self._exact(queries[rows], k, positions)
            ids = self._ids.labels_to_ids(labels)
            scores[rows], ids[rows] = exact_scores, exact_ids
            return scores, ids
        return scores, self._ids.labels_to_ids(labels)

    def _walk(
        self, queries: np.ndarray, k: int, ef: int, bits: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        selector = None if bits is None else bitmap_selector(bits)
        params = faiss.SearchParametersHNSW(
            efSearch=max(ef, k), sel=None if selector is None else selector.sel
        )
        scores, labels = self._ready().search(queries, k, params=params)
        scores[labels < 0] = -np.inf
        return scores, labels

    def _exact(
        self, queries: np.ndarray, k: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores over ``positions``, read in place from the graph's own storage."""
        import faiss

        storage = faiss.downcast_index(self._ready().storage)
        scores, labels = score_rows(
            queries, k, storage.get_xb(), storage.ntotal, self.dim, np.sort(positions)
        )
        return topk(scores, self._ids.labels_to_ids(labels), k)

    def search_exact(
        self, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if k <= 0 or len(self) == 0:
            return empty_result(len(queries), max(k, 0))
        return self._exact(queries, k, self._ids.positions(as_ids(ids)))

    def stored_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if not self._has_storage():
            return None  # loaded from a snapshot without its vectors: it holds none of its own
        positions = self._ids.positions(as_ids(ids))
        if len(positions) == 0:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return self._ids.ids[positions], self._graph.storage.reconstruct_batch(positions)

    def reserve(self, extra: int) -> None:
        if self._graph is None:
            self._graph = self._new_graph()
        _size_graph(self._ready(), extra, self.dim)

    # ------------------------------------------------------------------ vectors kept elsewhere

    def _has_storage(self) -> bool:
        return self._graph is None or self._graph.storage is not None

    def _ready(self) -> Any:
        """The graph, refused while it has no storage: FAISS would read through a null one."""
        if not self._has_storage():
            raise RuntimeError("hnsw: graph loaded without its vectors; attach_vectors() first")
        return self._graph

    def attach_vectors(self, lookup: VectorLookup) -> None:
        """Give a graph loaded without its storage the vectors of its positions, from ``lookup``.

        Positions are read in order (masked ones too: walks still pass through them) through the
        lookup's checked reads, so the vectors that enter the graph pass the log's chunk
        checksums as the snapshot's bytes passed its CRC: ``read_into`` (the engine's
        :class:`engine.vectors.VectorFile`, which reads straight into the storage's buffer),
        else ``checked().get`` or ``get``, in chunks. A no-op when the graph has its storage.
        """
        if self._has_storage():
            return
        import faiss

        ids = self._ids.ids
        storage = faiss.IndexFlatIP(self.dim)
        read_into = getattr(lookup, "read_into", None)
        if read_into is not None and len(ids):  # the log writes straight into the storage
            storage.codes.resize(len(ids) * self.dim * 4)
            rows = faiss.rev_swig_ptr(storage.get_xb(), len(ids) * self.dim)
            read_into(ids, rows.reshape(len(ids), self.dim))
            storage.ntotal = len(ids)
        else:
            reserve_storage(storage, len(ids), self.dim)
            checked = getattr(lookup, "checked", None)
            for _, part in fetched(ids, checked() if checked else lookup, self.dim):
                storage.add(part)
            release = getattr(lookup, "release", None)
            if release is not None:
                release()  # the storage is the graph's own copy now: let go of mapped pages
        storage.this.disown()  # the graph owns and frees it from here
        self._graph.storage = storage
        self._graph.own_fields = True

    # ------------------------------------------------------------------ upkeep

    def needs_rebuild(self) -> str | None:
        total = self._ids.total
        if total and self._ids.deleted_count / total > self.max_deleted:
            return (
                f"hnsw: {self._ids.deleted_count} of {total} graph nodes are deleted "
                f"({self._ids.deleted_count / total:.0%} > max_deleted={self.max_deleted:g})"
            )
        return None

    def state(self) -> dict[str, Any]:
        return {"nodes": self._ids.total, "deleted": self._ids.deleted_count, "M": self.M}

    # ------------------------------------------------------------------ recall knobs

    def knobs(self) -> dict[str, int]:
        return {} if self._graph is None else {"efSearch": self.ef_search}

    def knob_ladder(self) -> list[dict[str, int]]:
        return [{"efSearch": ef} for ef in EF_LADDER]

    def set_knobs(self, **values: int) -> None:
        if "efSearch" in values:
            self.ef_search = max(1, int(values["efSearch"]))

    def held_out(self, ids: np.ndarray) -> list[VectorIndex]:
        """Two views that bracket the recall of new queries: this graph as it is (the sample,
        linked to its neighbours at insertion, finds them too easily: 0.988 against 0.944 at
        efSearch 10) and a copy of the links with the sample unlinked (the nodes it relayed
        lose that path, which a graph built without it would not: 0.910). Their mean was
        within 0.012 of new queries' recall from efSearch 8 to 64 on two clustered sets
        (docs/indexes.md). The copy is ~70 int32 a node; the vectors stay shared.
        """
        linked = copy.copy(self)  # the sample masked (never answered), still walked through
        linked._ids = IdMap(self._ids.ids.copy(), self._ids.live.copy())
        linked._ids.remove(as_ids(ids))
        return [linked, self._unlinked(ids)]

    def _unlinked(self, ids: np.ndarray) -> HnswIndex:
        import faiss

        view = copy.copy(self)
        positions = self._ids.positions(as_ids(ids))
        view._ids = IdMap(self._ids.ids.copy(), self._ids.live.copy())
        if self._graph is None:
            return view
        graph = faiss.IndexHNSW(self._graph.storage, self.M)
        graph.own_fields = False
        graph.hnsw = self._graph.hnsw  # SWIG copies the struct: links, levels, offsets
        graph.ntotal = self._graph.ntotal
        graph.metric_type = self._graph.metric_type
        positions = positions[positions != graph.hnsw.entry_point]
        view._ids.remove(self._ids.ids[positions])
        links = faiss.vector_to_array(graph.hnsw.neighbors)
        _unlink(links, positions, faiss.vector_to_array(graph.hnsw.offsets),
                faiss.vector_to_array(graph.hnsw.cum_nneighbor_per_level))  # fmt: skip
        faiss.copy_array_to_vector(links, graph.hnsw.neighbors)
        view._graph, view._storage_owner = graph, self._graph  # the owner outlives the view
        return view

    def memory_bytes(self) -> int:
        if self._graph is None:
            return 0
        hnsw = self._graph.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        vectors = self._graph.ntotal * self.dim * 4
        idmap = self._ids.total * 9 + self._ids.live_count * 16
        return int(graph + vectors + idmap)

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> None:
        write_snapshot(Path(path), self.kind, self.write_into)

    def save_sharing_vectors(self, path: Path) -> None:
        write_snapshot(Path(path), self.kind, self.write_into, share_vectors=True)

    def write_into(self, writer: SnapshotWriter) -> dict[str, Any]:
        """Write the sections of this index (also used when nested in `auto`)."""
        if self._graph is not None:
            writer.faiss_index("graph", self._ready(), skip_storage=writer.share_vectors)
        writer.array("ids", self._ids.ids)
        writer.array("live", np.packbits(self._ids.live, bitorder="little"))
        return {"positions": self._ids.total, "M": self.M, "dim": self.dim}

    @classmethod
    def load(cls, path: Path, dim: int, **params: Any) -> HnswIndex:
        with open_snapshot(Path(path), cls.kind) as reader:
            return cls.read_from(reader, dim, **params)

    @classmethod
    def read_from(cls, reader: SnapshotReader, dim: int, **params: Any) -> HnswIndex:
        """Rebuild from sections; the graph keeps the saved ``M``, search options are ``params``."""
        index = cls(dim, **params)
        meta = reader.meta
        if meta["dim"] != index.dim:
            raise ValueError(f"hnsw snapshot has dim {meta['dim']}, expected {index.dim}")
        total = meta["positions"]
        live = np.unpackbits(reader.array("live"), count=total, bitorder="little").astype(bool)
        index._ids = IdMap(reader.array("ids"), live)
        if reader.has("graph"):
            index._graph = reader.faiss_index("graph")
            if index._graph.ntotal != total:
                raise ValueError(f"hnsw snapshot: {index._graph.ntotal} nodes, {total} ids")
            index._graph.hnsw.efConstruction = index.ef_construction
            index.M = int(meta["M"])
        return index


def _unlink(links: np.ndarray, nodes: np.ndarray, offsets: np.ndarray, cum: np.ndarray) -> None:
    """Take ``nodes`` out of a FAISS HNSW link table in place.

    A node's list is the slice ``offsets[i] + cum[l]`` to ``offsets[i] + cum[l + 1]`` at level
    ``l``; FAISS stops reading a list at its first -1, so the lists that lose an entry are
    packed (survivors first, in their order). Refilling a hole with the removed node's own
    neighbours (1 to 8 of them) moved the estimate by under 0.02 of the 0.04 it lacked.
    """
    if len(nodes) == 0:
        return
    offsets, cum = offsets.astype(np.int64), cum.astype(np.int64)
    gone = np.isin(links, nodes.astype(links.dtype))
    for node in nodes:  # their own lists go too (nothing reaches them any more)
        gone[offsets[node] : offsets[node + 1]] = True
    hit = np.flatnonzero(gone & (links >= 0))
    links[gone] = -1
    node = np.searchsorted(offsets, hit, side="right") - 1
    level = np.searchsorted(cum, hit - offsets[node], side="right") - 1
    starts, first = np.unique(offsets[node] + cum[level], return_index=True)
    widths = (cum[level + 1] - cum[level])[first]
    for width in np.unique(widths):
        cells = starts[widths == width][:, None] + np.arange(width)
        block = links[cells]
        order = np.argsort(block < 0, axis=1, kind="stable")
        links[cells] = np.take_along_axis(block, order, axis=1)


def _size_graph(graph: Any, extra: int, dim: int) -> None:
    """Room for ``extra`` more nodes: their vectors and their links, each grown once."""
    import faiss

    if extra <= 0:
        return
    reserve_storage(faiss.downcast_index(graph.storage), extra, dim)
    # Links: 2M on the bottom level plus about one more a node on average above it; four
    # spare slots a node make a second reallocation very unlikely.
    links = graph.hnsw.neighbors
    used = links.size()
    links.resize(used + int(extra) * (graph.hnsw.nb_neighbors(0) + 4))
    links.resize(used)
