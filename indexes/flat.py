"""`flat`: exact inner-product search, the reference every other kind is measured against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.options import reject_unknown_options
from indexes._exact import reserve_storage, score_rows, topk
from indexes._idmap import IdMap
from indexes.base import VectorIndex, as_ids, as_vectors, empty_result


class FlatIndex(VectorIndex):
    """IndexIDMap2 over IndexFlatIP: stable int64 ids, exact scores, real removal."""

    kind = "flat"

    def __init__(self, dim: int, **params: Any) -> None:
        reject_unknown_options(params, set(), "index 'flat'")
        super().__init__(dim)
        import faiss

        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._rows: tuple[np.ndarray, IdMap] | None = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_ids(ids)
        if len(ids):
            self._index.add_with_ids(as_vectors(vectors, self.dim), ids)
            self._rows = None

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        ids = as_ids(ids)
        if len(ids) and self._index.ntotal:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            self._rows = None

    def reserve(self, extra: int) -> None:
        import faiss

        reserve_storage(faiss.downcast_index(self._index.index), extra, self.dim)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with exactly ``ids``/``vectors`` (a memmap is read in chunks)."""
        from indexes._exact import chunks

        self._index.reset()  # keeps the storage's capacity
        self._rows = None
        self.reserve(len(ids))
        for part_ids, part in chunks(ids, vectors, self.dim):
            self.add(part_ids, part)

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = as_vectors(queries, self.dim)
        if self._index.ntotal == 0 or k <= 0:
            return empty_result(len(queries), max(k, 0))
        params = None
        if allowed_ids is not None:
            allowed = as_ids(allowed_ids)
            if len(allowed) == 0:
                return empty_result(len(queries), k)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        scores, ids = self._index.search(queries, k, params=params)
        scores[ids < 0] = -np.inf
        return scores, ids

    def search_exact(
        self, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = as_vectors(queries, self.dim)
        if self._index.ntotal == 0 or k <= 0:
            return empty_result(len(queries), max(k, 0))
        by_row, rows_of = self._row_lookup()
        rows = rows_of.positions(as_ids(ids))  # sorted: read in memory order
        storage = faiss.downcast_index(self._index.index)
        scores, rows = score_rows(queries, k, storage.get_xb(), storage.ntotal, self.dim, rows)
        found = np.where(rows >= 0, by_row[np.maximum(rows, 0)], -1)
        return topk(scores, found, k)

    def stored_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        by_row, rows_of = self._row_lookup()
        rows = rows_of.positions(as_ids(ids))
        storage = faiss.downcast_index(self._index.index)
        return by_row[rows], storage.reconstruct_batch(rows)

    def _row_lookup(self) -> tuple[np.ndarray, IdMap]:
        """(id of each storage row, ids to rows): rebuilt after a change, kept until the next.

        The same map `hnsw` keeps for its positions: a direct table while ids are dense, so
        5,000 filtered ids become rows in microseconds rather than a 0.2 ms binary search.
        """
        if self._rows is None:
            by_row = self.ids()
            self._rows = (by_row, IdMap(by_row))
        return self._rows

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def replay_is_cheap(self) -> bool:
        return True

    def ids(self) -> np.ndarray:
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, dim: int, **params: Any) -> FlatIndex:
        import faiss

        index = cls(dim, **params)
        loaded = faiss.read_index(str(path))
        if loaded.d != index.dim:
            raise ValueError(f"index file {path} has dim {loaded.d}, expected {index.dim}")
        index._index = loaded
        index._rows = None
        return index
