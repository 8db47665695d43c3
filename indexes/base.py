"""The index contract: what every vector index kind promises the engine.

An index holds L2-normalised float32 vectors under stable int64 ids and answers inner-product
top-k queries, optionally restricted to a set of allowed ids. It does not own durability: the
engine keeps the exact vectors and decides when to snapshot an index with :meth:`save`, so an
index may be rebuilt, retrained or switched to another kind without re-running the encoder.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np


class VectorLookup(Protocol):
    """Exact vectors by id, for indexes that re-rank approximate candidates."""

    def get(self, ids: np.ndarray) -> np.ndarray: ...


class LookupRows:
    """Rows of vectors for ``ids`` read through a lookup on demand, shaped like an array.

    Lets a switch (or the engine's rebuild) hand exact vectors to an index's ``rebuild``
    chunk by chunk instead of holding a full copy. Part of the contract because both sides
    build it: the engine reaches index kinds only through this module.
    """

    def __init__(self, ids: np.ndarray, lookup: VectorLookup) -> None:
        self._ids, self._lookup = ids, lookup

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.asarray(self._lookup.get(self._ids[rows]), dtype=np.float32)


class VectorIndex(ABC):
    """Base class of index kinds. Construction is cheap; FAISS is imported lazily."""

    kind: ClassVar[str] = ""

    def __init__(self, dim: int, **params: Any) -> None:
        self.dim = int(dim)
        self._params = dict(params)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters as stored in the manifest; passing them back rebuilds an equal index."""
        return dict(self._params)

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ids that are not in the index yet."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Remove ids; ids that are absent are ignored."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: ``(scores [nq, k], ids [nq, k])``, padded with -inf and -1.

        With ``allowed_ids`` only those ids may be returned, and k of them are returned whenever
        at least k of them are in the index.
        """

    @abstractmethod
    def __len__(self) -> int:
        """Number of live vectors."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the index to exactly ``path`` (the engine makes the write atomic)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, dim: int, **params: Any) -> VectorIndex:
        """Read an index written by :meth:`save`."""

    def save_sharing_vectors(self, path: Path) -> None:
        """:meth:`save`, for a caller whose exact-vector log holds the indexed vectors by id.

        A kind that keeps vectors in full may then leave them out of the file, so they are on
        disk once; :meth:`load` of such a file gives an index that takes them back in
        :meth:`attach_vectors`, which the engine calls right after loading. Default: :meth:`save`.
        """
        self.save(path)

    # Optional lifecycle hooks; defaults suit an exact index.

    def attach_vectors(self, lookup: VectorLookup) -> None:  # noqa: B027 - optional hook
        """Give the index access to the exact vectors (for re-ranking, and for a kind loaded
        from :meth:`save_sharing_vectors`' file, its own copy); default: unused."""

    def needs_rebuild(self) -> str | None:
        """A reason to rebuild from the exact vectors (drift, too many masked deletes), or None."""
        return None

    def search_exact(
        self, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-k among ``ids`` scored from the index's own copy of the vectors, or None.

        The engine answers selective filters exactly. Kinds that keep every vector in full
        (flat, hnsw) score them where they already are, so a filtered query needs no second
        copy of the vectors in memory; kinds that keep only codes return None and the engine
        reads its exact vector file instead.
        """
        return None

    def stored_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(those of ``ids`` the index holds, their vectors as stored), or None.

        `verify` compares them with the engine's exact vectors, which nothing else does: an index
        holding another vector under an id would pass every id and checksum test. `repair`
        restores lost exact vectors from a snapshot through it. Kinds keeping only codes
        return None.
        """
        return None

    def reserve(self, extra: int) -> None:  # noqa: B027 - optional hook
        """Make room for ``extra`` more vectors before an add of several commits.

        Growing FAISS's storage commit by commit copies it each time it doubles, so the old and
        the new buffer are both resident at the peak; sizing it once avoids that.
        """

    def replay_is_cheap(self) -> bool:
        """Whether re-adding un-snapshotted vectors on open is cheap (a copy, not a graph build).

        The engine snapshots at the end of every sizeable add for kinds where it is not, so a
        fresh process never rebuilds part of a graph before its first answer.
        """
        return False

    def state(self) -> dict[str, Any]:
        """Facts worth recording in the manifest after a commit (e.g. `auto`'s active kind)."""
        return {}

    # Search-time knobs, which the engine tunes to a recall target (engine/recall.py).

    def active_kind(self) -> str:
        """The kind that answers searches (`auto` names the kind it delegates to)."""
        return self.kind

    def build_mark(self) -> Any:
        """A JSON-able value that changes when the index rebuilds itself inside an ``add``.

        `auto` switching kinds or `ivfpq` training on the add that reaches ``train_min`` make
        a new structure without a replacement index passing through the engine; the engine
        compares marks to know that a recall measurement of the old structure is stale.
        """
        return None

    def knobs(self) -> dict[str, int]:
        """Search-time parameters in force, by option name; empty for an exact search.

        Exact kinds (and `ivfpq` before training) return nothing: their recall is 1 and
        the engine does not measure them.
        """
        return {}

    def knob_ladder(self) -> list[dict[str, int]]:
        """Settings of :meth:`knobs` to try, cheapest first, within the kind's latency budget."""
        return []

    def set_knobs(self, **values: int) -> None:  # noqa: B027 - optional hook
        """Use these search-time parameters from now on (names as in :meth:`knobs`)."""

    def pinned_knobs(self) -> set[str]:
        """Knobs the user set as options: a recall target leaves them as they are."""
        return set(self.knobs()) & set(self._params)

    def held_out(self, ids: np.ndarray) -> list[VectorIndex]:
        """Search-only views whose recall, averaged per query, estimates the recall of new
        queries when ``ids`` (stored vectors) are the queries and leave the answers.

        The engine measures recall with stored vectors as queries and drops the query's own
        row from results and truth. A graph links each node to its neighbours at insertion,
        so a stored query walks straight to them and looks better than a new one; `hnsw`
        returns a second, unlinked view that errs the other way. Kinds where a stored query
        has no such head start return one copy sharing their data, so that setting its knobs
        does not touch the shared index. Searches on a view hold the index's own lock.
        """
        return [copy.copy(self)]

    def memory_bytes(self) -> int:
        """Approximate resident size, for `info` and the `auto` kind's budget."""
        return len(self) * self.dim * 4


def empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_vectors(vectors: Any, dim: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {list(array.shape)}")
    return array
