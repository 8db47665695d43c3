"""Engine ids over an append-only FAISS index, with deletions as a mask.

A graph index cannot remove a node, and FAISS's own ``IndexIDMap2`` has no notion of a masked
one, so `hnsw` labels its nodes by position (0, 1, 2, ...) and keeps here the engine id of each
position, which positions are still live, and a sorted view of the live ids for the reverse
lookup. Re-adding a deleted id (an upsert) takes a new position; the old one stays masked until
the next rebuild.

A filtered search turns every allowed id into a position: for 50,000 allowed ids in a million a
binary search costs 4 ms, the whole budget of a fast query. Engine ids are dense (they grow from
1), so while they are, a direct table ``position = table[id]`` answers in a tenth of that.
"""

from __future__ import annotations

import numpy as np

from indexes._select import bitmap

#: The direct table is kept while the largest id is below this many times the live count
#: (plus a million): at most 8 * 64 = 512 bytes a vector next to HNSW's 2,300.
_DENSE = 64


class IdMap:
    """Positions to ids and back; every live id has exactly one live position."""

    def __init__(self, ids: np.ndarray | None = None, live: np.ndarray | None = None) -> None:
        self.ids = np.empty(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self.live = np.ones(len(self.ids), bool) if live is None else np.asarray(live, bool)
        positions = np.flatnonzero(self.live)
        order = np.argsort(self.ids[positions], kind="stable")
        self._keys = self.ids[positions][order]  # sorted live ids
        self._where = positions[order]  # their positions
        self._live_bits: np.ndarray | None = None
        self._table: np.ndarray | None = None  # id -> live position or -1, while ids are dense

    @property
    def total(self) -> int:
        """Positions ever used, live or masked: the size of the FAISS index."""
        return len(self.ids)

    @property
    def live_count(self) -> int:
        return len(self._keys)

    @property
    def deleted_count(self) -> int:
        return self.total - self.live_count

    def append(self, ids: np.ndarray) -> None:
        """Give ``ids`` the next positions; they must not be live already."""
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids) or len(self.positions(ids)):
            raise ValueError("add: some ids are already in the index (remove them first)")
        start = self.total
        order = np.argsort(ids, kind="stable")
        keys, where = ids[order], start + order
        if self.live_count == 0 or keys[0] > self._keys[-1]:
            self._keys = np.concatenate([self._keys, keys])
            self._where = np.concatenate([self._where, where])
        else:  # ids out of order (rare): merge
            slots = np.searchsorted(self._keys, keys)
            self._keys = np.insert(self._keys, slots, keys)
            self._where = np.insert(self._where, slots, where)
        self.ids = np.concatenate([self.ids, ids])
        self.live = np.concatenate([self.live, np.ones(len(ids), bool)])
        self._live_bits = None
        if self._table is not None:
            top = int(ids.max()) + 1
            if ids.min() < 0 or not self._dense(top):
                self._table = None
            else:
                if top > len(self._table):  # grow by doubling, like a list
                    grown = np.full(max(top, 2 * len(self._table)), -1, np.int64)
                    grown[: len(self._table)] = self._table
                    self._table = grown
                self._table[ids] = start + np.arange(len(ids))

    def remove(self, ids: np.ndarray) -> int:
        """Mask the live positions of ``ids``; returns how many were live."""
        slots = self._slots(ids)
        if len(slots):
            self.live[self._where[slots]] = False
            if self._table is not None:
                self._table[self._keys[slots]] = -1
            self._keys = np.delete(self._keys, slots)
            self._where = np.delete(self._where, slots)
            self._live_bits = None
        return len(slots)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Live positions of those ``ids`` that are in the index (absent ids are dropped)."""
        table = self._direct_table()
        if table is None:
            return self._where[self._slots(ids)]
        found = table[ids[(ids >= 0) & (ids < len(table))]]
        found = found[found >= 0]
        if len(found) > 1 and not (np.diff(found) > 0).all():
            found = np.unique(found)
        return found

    def _dense(self, top: int) -> bool:
        return top <= _DENSE * self.live_count + (1 << 20)

    def _direct_table(self) -> np.ndarray | None:
        """The id -> position table, built on first use.

        Searches call this in parallel under the view's shared lock, so the table is filled
        before it is published: a table published empty and filled afterwards answered a
        concurrent filtered search with no positions at all (0 hits, seen under load right
        after a snapshot reload, which starts a fresh map).
        """
        if self._table is None and self.live_count:
            top = int(self._keys[-1]) + 1
            if self._keys[0] >= 0 and self._dense(top):
                table = np.full(top, -1, np.int64)
                table[self._keys] = self._where
                self._table = table
        return self._table

    def _slots(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0 or self.live_count == 0:
            return np.empty(0, np.int64)
        slots = np.searchsorted(self._keys, ids)
        inside = slots < len(self._keys)
        hit = np.zeros(len(ids), bool)
        hit[inside] = self._keys[slots[inside]] == ids[inside]
        slots = slots[hit]
        if len(slots) > 1 and not (np.diff(slots) > 0).all():  # engines pass sorted ids
            slots = np.unique(slots)
        return slots

    def live_ids(self) -> np.ndarray:
        return self._keys.copy()

    def live_bitmap(self) -> np.ndarray:
        """Packed bitmap of live positions, cached until the next add or remove."""
        if self._live_bits is None:
            self._live_bits = bitmap(np.flatnonzero(self.live), self.total)
        return self._live_bits

    def labels_to_ids(self, labels: np.ndarray) -> np.ndarray:
        """FAISS labels (positions, -1 for none) to engine ids (-1 stays -1)."""
        out = np.full(labels.shape, -1, np.int64)
        found = labels >= 0
        out[found] = self.ids[labels[found]]
        return out
