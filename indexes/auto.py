"""`auto`: the default kind, which picks `flat`, `hnsw` or `ivfpq` by size and memory budget.

A new collection starts exact (`flat`): small collections deserve exact answers and cost little
to scan. Past ``exact_max`` vectors it switches to `hnsw`; when the graph and its vectors would
not fit ``memory_mb`` (or past ``ivfpq_min`` vectors, when set) it switches to `ivfpq`, which
keeps only codes in memory. Switches go one way on :meth:`add` (flat -> hnsw -> ivfpq), built
from the engine's exact vectors through the lookup; :meth:`rebuild` picks afresh for the size it
is given, so a collection that shrank can go back. Each switch is listed in :meth:`state` for
the manifest. Without a lookup an add cannot rebuild, so the switch waits: the add goes to the
active kind and :meth:`needs_rebuild` names the switch, which the engine's rebuild then makes.

Options: ``exact_max`` (20000), ``memory_mb`` (none), ``ivfpq_min`` (none), and options of the
kinds it may switch to, prefixed with their name: ``hnsw.M=48``, ``ivfpq.nprobe=32``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.options import option_float, option_int, reject_unknown_options
from indexes._snapshot import SnapshotWriter, open_snapshot, write_snapshot
from indexes.base import LookupRows, VectorIndex, VectorLookup, as_ids

OPTIONS = {"exact_max", "memory_mb", "ivfpq_min"}
ORDER = ("flat", "hnsw", "ivfpq")


def _kind_class(kind: str) -> type[VectorIndex]:
    if kind == "flat":
        from indexes.flat import FlatIndex

        return FlatIndex
    if kind == "hnsw":
        from indexes.hnsw import HnswIndex

        return HnswIndex
    from indexes.ivfpq import IvfPqIndex

    return IvfPqIndex


class AutoIndex(VectorIndex):
    """Delegates to one active kind and replaces it when the collection outgrows it."""

    kind = "auto"

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        own = {key: value for key, value in params.items() if "." not in key}
        reject_unknown_options(own, OPTIONS, "index 'auto'")
        self._sub: dict[str, dict[str, Any]] = {kind: {} for kind in ORDER}
        for key, value in params.items():
            if "." in key:
                kind, _, name = key.partition(".")
                if kind not in ("hnsw", "ivfpq"):
                    raise BadInput(f"index 'auto': option {key!r} must start with hnsw. or ivfpq.")
                self._sub[kind][name] = value
        for kind in ("hnsw", "ivfpq"):
            _kind_class(kind)(self.dim, **self._sub[kind])  # reject bad options now, not later
        self.exact_max = option_int(own, "exact_max", 20000)
        self.memory_mb = option_float(own, "memory_mb")
        self.ivfpq_min = option_int(own, "ivfpq_min")
        self._lookup: VectorLookup | None = None
        self._active = self._make("flat")
        self._switches: list[dict[str, Any]] = []
        self._pending: str | None = None
        self._expected = 0  # the size the current add is heading for (see reserve)

    @property
    def active(self) -> VectorIndex:
        return self._active

    def _make(self, kind: str) -> VectorIndex:
        index = _kind_class(kind)(self.dim, **self._sub[kind])
        if self._lookup is not None:
            index.attach_vectors(self._lookup)
        return index

    def attach_vectors(self, lookup: VectorLookup) -> None:
        self._lookup = lookup
        self._active.attach_vectors(lookup)

    # ------------------------------------------------------------------ choice

    def estimate_bytes(self, kind: str, n: int) -> int:
        """Resident bytes ``kind`` would need for ``n`` vectors (ids and graph included)."""
        if kind == "flat":
            per = 4 * self.dim + 64
        elif kind == "hnsw":
            per = 4 * self.dim + 9 * option_int(self._sub["hnsw"], "M", 32) + 48
        else:
            ivfpq = _kind_class("ivfpq")(self.dim, **self._sub["ivfpq"])
            per = ivfpq.pq * ivfpq.nbits // 8 + 16
        return n * per

    def choose(self, n: int) -> tuple[str, str]:
        """The kind for ``n`` vectors, and why."""
        budget = None if self.memory_mb is None else self.memory_mb * 2**20

        def fits(kind: str) -> bool:
            return budget is None or self.estimate_bytes(kind, n) <= budget

        if n <= self.exact_max and fits("flat"):
            return "flat", f"{n} vectors <= exact_max={self.exact_max}"
        if self.ivfpq_min is not None and n >= self.ivfpq_min:
            return "ivfpq", f"{n} vectors >= ivfpq_min={self.ivfpq_min}"
        if fits("hnsw"):
            return "hnsw", f"{n} vectors > exact_max={self.exact_max}"
        need = self.estimate_bytes("hnsw", n) / 2**20
        return "ivfpq", f"hnsw would need {need:.0f} MiB > memory_mb={self.memory_mb:g}"

    # ------------------------------------------------------------------ writes

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_ids(ids)
        if len(ids) == 0:
            return
        # An add announced by reserve() picks the kind for its final size at once, so it never
        # builds a flat index only to rebuild it as a graph a commit later.
        target, reason = self.choose(max(len(self) + len(ids), self._expected))
        if ORDER.index(target) <= ORDER.index(self._active.kind):
            self._active.add(ids, vectors)
        elif self._lookup is None:
            self._active.add(ids, vectors)
            self._pending = f"auto: switch {self._active.kind} -> {target} ({reason})"
        else:
            old = self._active.ids()
            index = self._make(target)
            # Sized first, so the rebuilt part is not copied again when the rest arrives.
            index.reserve(max(self._expected, len(old) + len(ids)))
            index.rebuild(old, LookupRows(old, self._lookup))
            index.add(ids, vectors)
            self._adopt(index, len(index), reason)

    def _adopt(self, index: VectorIndex, count: int, reason: str) -> None:
        if index.kind != self._active.kind:
            switch = {"from": self._active.kind, "to": index.kind, "at_count": count}
            self._switches.append({**switch, "reason": reason})
        self._active, self._pending = index, None

    def remove(self, ids: np.ndarray) -> None:
        self._active.remove(ids)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Pick the kind for ``len(ids)`` vectors and build it from ``ids``/``vectors``."""
        ids = as_ids(ids)
        target, reason = self.choose(len(ids))
        index = self._make(target)
        index.rebuild(ids, vectors)
        self._adopt(index, len(ids), reason)

    # ------------------------------------------------------------------ reads

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._active.search(queries, k, allowed_ids)

    def __len__(self) -> int:
        return len(self._active)

    def replay_is_cheap(self) -> bool:
        return self._active.replay_is_cheap()

    def search_exact(
        self, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return self._active.search_exact(queries, k, ids)

    def stored_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return self._active.stored_vectors(ids)

    def reserve(self, extra: int) -> None:
        self._expected = len(self) + extra
        if self.choose(self._expected)[0] == self._active.kind:
            self._active.reserve(extra)
        # else the kind switches within this add, and the new kind reserves then (see add)

    def ids(self) -> np.ndarray:
        return self._active.ids()

    def needs_rebuild(self) -> str | None:
        if self._pending:
            return self._pending
        reason = self._active.needs_rebuild()
        return None if reason is None else f"auto: {reason}"

    def state(self) -> dict[str, Any]:
        return {
            "active": self._active.kind,
            "switches": [dict(s) for s in self._switches],
            "index": self._active.state(),
        }

    def memory_bytes(self) -> int:
        return self._active.memory_bytes()

    # ------------------------------------------------------------------ recall knobs

    def active_kind(self) -> str:
        return self._active.kind

    def build_mark(self) -> Any:
        return [self._active.kind, len(self._switches), self._active.build_mark()]

    def knobs(self) -> dict[str, int]:
        return self._active.knobs()

    def knob_ladder(self) -> list[dict[str, int]]:
        return self._active.knob_ladder()

    def set_knobs(self, **values: int) -> None:
        self._active.set_knobs(**values)

    def pinned_knobs(self) -> set[str]:
        return self._active.pinned_knobs()

    def held_out(self, ids: np.ndarray) -> list[VectorIndex]:
        return self._active.held_out(ids)

    def budget_forced(self) -> str | None:
        """Why the active kind is `ivfpq` when that was not the user's choice of size, or None.

        A recall target cannot move `auto` off `ivfpq` when the memory budget put it there
        (the budget is a hard limit); the engine reports that the target gave way.
        """
        if self._active.kind != "ivfpq" or self.memory_mb is None:
            return None
        if self.ivfpq_min is not None and len(self) >= self.ivfpq_min:
            return None
        if self.estimate_bytes("hnsw", len(self)) <= self.memory_mb * 2**20:
            return None
        need = self.estimate_bytes("hnsw", len(self)) / 2**20
        return f"hnsw would need {need:.0f} MiB > memory_mb={self.memory_mb:g}"

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> None:
        self._save(Path(path), share_vectors=False)

    def save_sharing_vectors(self, path: Path) -> None:
        self._save(Path(path), share_vectors=True)

    def _save(self, path: Path, share_vectors: bool) -> None:
        def fill(writer: SnapshotWriter) -> dict[str, Any]:
            return self._write_into(writer, path.parent)

        write_snapshot(path, self.kind, fill, share_vectors=share_vectors)

    def _write_into(self, writer: SnapshotWriter, scratch: Path) -> dict[str, Any]:
        kind = self._active.kind
        meta = {"active": kind, "switches": self._switches, "pending": self._pending}
        if kind == "flat":  # flat writes only whole files: copy one in
            with tempfile.TemporaryDirectory(dir=scratch) as tmp:
                self._active.save(Path(tmp) / "flat.faiss")
                writer.file("flat", Path(tmp) / "flat.faiss")
            return meta
        return {**meta, "index": self._active.write_into(writer.child(kind))}

    @classmethod
    def load(cls, path: Path, dim: int, **params: Any) -> AutoIndex:
        path = Path(path)
        index = cls(dim, **params)
        with open_snapshot(path, cls.kind) as reader:
            meta = reader.meta
            kind = meta["active"]
            if kind == "flat":
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    reader.file("flat", Path(tmp) / "flat.faiss")
                    active = _kind_class("flat").load(Path(tmp) / "flat.faiss", dim)
            else:
                nested = reader.child(kind, meta["index"])
                active = _kind_class(kind).read_from(nested, dim, **index._sub[kind])
        index._active = active
        index._switches = [dict(s) for s in meta["switches"]]
        index._pending = meta["pending"]
        return index
