"""`ivfpq`: inverted lists of product-quantised codes, re-ranked on the exact vectors.

Only the codes (``pq`` bytes a vector at 8 bits, 64 at 512-d) and the ids stay in memory; the
engine keeps the exact vectors and lends them through :meth:`attach_vectors`, and each search
re-scores its ``k * rerank`` best code matches on them, so recall holds where PQ alone would
blur the top of the list. Without a lookup the scores are the PQ approximations.

Lifecycle:

* Untrained: until ``train_min`` vectors have arrived (default 12,032 at 8 bits: the 9,984
  FAISS wants to train a codebook plus 2,048 held out to measure the fit) the index keeps them
  as they are and searches exactly.
  The add that reaches ``train_min`` trains on a sample of everything held and encodes it.
* Trained: adds and removes work on the lists. Each add measures how far its new vectors sit
  from their nearest centroid; :meth:`needs_rebuild` asks for a retrain when recent vectors sit
  ``drift_ratio`` times farther than held-out vectors did at training, or when the collection
  has grown ``retrain_growth`` times past its size at training. :meth:`rebuild` retrains.

Options: ``nlist`` (default: by size at training), ``nprobe`` (default ``max(8, nlist / 64)``),
``pq`` (sub-quantisers, default ``dim / 8`` up to 64), ``nbits`` (8), ``opq`` (false),
``rerank`` (10), ``train_min``, ``train_sample``, ``retrain_growth`` (4), ``drift_ratio``
(1.05), ``gpu`` (auto / off / on: train on a GPU when FAISS has one).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.options import (
    option_bool,
    option_float,
    option_int,
    option_str,
    reject_unknown_options,
)
from indexes import _ivf_train as training
from indexes import gpu
from indexes._exact import chunks, exact_search, rerank, topk
from indexes._select import id_selector
from indexes._snapshot import SnapshotReader, SnapshotWriter, open_snapshot, write_snapshot
from indexes._threads import faiss_threads, for_rows
from indexes.base import VectorIndex, VectorLookup, as_ids, as_vectors, empty_result

OPTIONS = {
    "nlist", "nprobe", "pq", "nbits", "opq", "rerank", "train_min", "train_sample",
    "retrain_growth", "drift_ratio", "gpu",
}  # fmt: skip
#: Re-rank depths a recall target chooses among.
RERANK_LADDER = (5, 10, 20, 40)
#: A short search is retried with this many times the probes, up to all lists.
_WIDEN = 4
#: Filtered candidates score closer together (they are farther from the query), so the
#: pool re-ranked on exact vectors is this many times larger.
_FILTER_POOL = 2


class _Hidden:
    """A FAISS selector plus what it reads, kept alive together (see indexes._select)."""

    def __init__(self, sel: Any, keep: Any) -> None:
        self.sel, self.keep = sel, keep


class IvfPqIndex(VectorIndex):
    """IndexIVFPQ (inner product) with FAISS-native ids, an exact buffer before training."""

    kind = "ivfpq"

    def __init__(self, dim: int, **params: Any) -> None:
        reject_unknown_options(params, OPTIONS, "index 'ivfpq'")
        super().__init__(dim, **params)
        owner = "index 'ivfpq'"
        self.nlist = option_int(params, "nlist")
        self.nprobe = option_int(params, "nprobe")
        self.pq = option_int(params, "pq") or training.default_pq(self.dim)
        self.nbits = option_int(params, "nbits", 8)
        self.opq = option_bool(params, "opq", False)
        self.rerank = option_int(params, "rerank", 10)
        self.train_min = option_int(params, "train_min") or training.min_training(
            self.nbits, self.nlist
        )
        self.train_sample = option_int(params, "train_sample")
        self.retrain_growth = option_float(params, "retrain_growth", 4.0)
        self.drift_ratio = option_float(params, "drift_ratio", 1.05)
        self.gpu = gpu.check_mode(option_str(params, "gpu"), owner)
        if self.dim % self.pq or not 1 <= self.nbits <= 16:
            raise BadInput(f"{owner}: pq={self.pq} must divide dim={self.dim}; nbits in 1..16")
        if min(self.nlist or 1, self.nprobe or 1, self.rerank, self.train_min) < 1:
            raise BadInput(f"{owner}: nlist, nprobe, rerank and train_min must be positive")
        if self.train_min < max(2**self.nbits, self.nlist or 0):
            raise BadInput(f"{owner}: train_min must be at least 2**nbits and nlist")
        self._buffer_ids = np.empty(0, np.int64)
        self._buffer = np.empty((0, self.dim), np.float32)
        self._trained: training.Trained | None = None
        self._trained_count = 0
        self._recent = training.FitWindow(1000)
        self._lookup: VectorLookup | None = None
        self._hidden: Any = None  # a held-out view's selector of the ids it never answers

    def attach_vectors(self, lookup: VectorLookup) -> None:
        self._lookup = lookup

    @property
    def trained(self) -> bool:
        return self._trained is not None

    # ------------------------------------------------------------------ writes

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_ids(ids)
        if len(ids) == 0:
            return
        vectors = as_vectors(vectors, self.dim)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        if self._trained is None:
            if len(self._buffer_ids) + len(ids) >= self.train_min:
                self._fill([(self._buffer_ids, self._buffer), (ids, vectors)])
            else:
                self._buffer_ids = np.concatenate([self._buffer_ids, ids])
                self._buffer = np.concatenate([self._buffer, vectors])
            return
        with faiss_threads(for_rows(len(ids))):
            self._trained.ivf.add_with_ids(self._trained.transform(vectors), ids)
            self._recent.add(len(ids), float(np.mean(self._trained.distances(vectors))))

    def remove(self, ids: np.ndarray) -> None:
        ids = as_ids(ids)
        if len(ids) == 0:
            return
        if self._trained is None:
            keep = ~np.isin(self._buffer_ids, ids)
            self._buffer_ids, self._buffer = self._buffer_ids[keep], self._buffer[keep]
        else:
            # Keep the Selector (it owns the bitmap FAISS reads) alive for the whole call: a
            # temporary's bitmap could be freed mid-call, and some deleted ids survived.
            selector = id_selector(ids)
            self._trained.ivf.remove_ids(selector.sel)
            del selector

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with exactly ``ids``/``vectors`` and retrain on a sample of them.

        ``vectors`` may be a memmap: a sample is read to train, then chunks to encode. Below
        ``train_min`` vectors the index goes back to holding them exactly.
        """
        ids = as_ids(ids)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        self._fill([(ids, vectors)])

    def _fill(self, parts: Sequence[tuple[np.ndarray, Any]]) -> None:
        """Train on and encode ``parts``, then swap the result in (the old stays on failure)."""
        n = sum(len(ids) for ids, _ in parts)
        if n < self.train_min:
            ids = np.concatenate([as_ids(i) for i, _ in parts])
            # Sliced: a LookupRows (an `auto` switch) reads its rows only when sliced.
            vectors = np.concatenate(
                [np.empty((0, self.dim), np.float32)]
                + [as_vectors(v[: len(i)], self.dim) for i, v in parts if len(i)]
            )
            self._buffer_ids, self._buffer, self._trained = ids, vectors, None
            self._trained_count, self._recent = 0, training.FitWindow(1000)
            return
        trained = training.train(
            parts, self.dim, nlist=self.nlist, pq=self.pq, nbits=self.nbits, opq=self.opq,
            sample=self.train_sample, gpu_mode=self.gpu,
        )  # fmt: skip
        for ids, vectors in parts:
            for part_ids, part in chunks(ids, vectors, self.dim):
                trained.ivf.add_with_ids(trained.transform(part), part_ids)
        trained.ivf = training.compact(trained.ivf)
        self._trained, self._trained_count = trained, n
        self._recent = training.FitWindow(self._window_for(n))
        self._buffer_ids = np.empty(0, np.int64)
        self._buffer = np.empty((0, self.dim), np.float32)

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._buffer_ids) if self._trained is None else int(self._trained.ivf.ntotal)

    def stored_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self._trained is not None:
            return None  # codes only
        keep = np.isin(self._buffer_ids, as_ids(ids))
        return self._buffer_ids[keep], self._buffer[keep]

    def ids(self) -> np.ndarray:
        """Ids held, sorted."""
        if self._trained is None:
            return np.sort(self._buffer_ids)
        return np.sort(self._trained.ids())

    def probes(self) -> int:
        """Lists probed by an unfiltered search."""
        nlist = self._trained.nlist if self._trained else 1
        return min(nlist, self.nprobe or max(8, nlist // 64))

    def filtered_probes(self, allowed: int) -> int:
        """Lists probed under a filter admitting ``allowed`` ids: ``probes / share``.

        The k-th nearest admitted vector sits about ``k / share`` deep in the unfiltered
        ranking. Probing ``1 / share`` times more lists scans about as many admitted vectors as
        an unfiltered search scans vectors, which measured recall@10 >= 0.98 at 1-20 % filters;
        a narrow filter on a small collection so scans every list (cheap: one bit per code).
        """
        share = min(1.0, allowed / len(self))
        nlist = self._trained.nlist if self._trained else 1
        return int(min(nlist, np.ceil(self.probes() / share)))

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        if k <= 0 or len(self) == 0:
            return empty_result(len(queries), max(k, 0))
        if self._trained is None:
            ids, vectors = self._buffer_ids, self._buffer
            if allowed_ids is not None:
                keep = np.isin(ids, as_ids(allowed_ids))
                ids, vectors = ids[keep], vectors[keep]
            return exact_search(queries, k, [(ids, vectors)])
        pool = min(len(self), k * self.rerank) if self._lookup is not None else k
        selector, probes = self._hidden, self.probes()
        if allowed_ids is not None:
            allowed = as_ids(allowed_ids)
            if len(allowed) == 0:
                return empty_result(len(queries), k)
            selector = id_selector(allowed)
            probes = self.filtered_probes(len(allowed))
            pool = min(len(self), pool * _FILTER_POOL)
        scores, labels = self._probe(queries, pool, probes, selector, min(k, len(self)))
        if self._lookup is None:
            return topk(scores, labels, k)
        return rerank(queries, labels, self._lookup, k)

    def _probe(
        self, queries: np.ndarray, pool: int, probes: int, selector: Any, wanted: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search the lists, probing more for rows that come back with fewer than ``wanted``."""
        import faiss

        assert self._trained is not None
        ivf, nlist = self._trained.ivf, self._trained.nlist
        rotated = self._trained.transform(queries)
        scores = np.full((len(queries), pool), -np.inf, np.float32)
        labels = np.full((len(queries), pool), -1, np.int64)
        rows = np.arange(len(queries))
        probes = min(probes, nlist)
        while len(rows):
            params = faiss.SearchParametersIVF(
                nprobe=probes, sel=None if selector is None else selector.sel
            )
            scores[rows], labels[rows] = ivf.search(rotated[rows], pool, params=params)
            if probes >= nlist:
                break
            rows = rows[(labels[rows] >= 0).sum(axis=1) < wanted]
            probes = min(nlist, probes * _WIDEN)
        scores[labels < 0] = -np.inf
        return scores, labels

    # ------------------------------------------------------------------ upkeep

    @staticmethod
    def _window_for(trained_count: int) -> int:
        """Recent vectors whose fit is compared with the fit at training."""
        return max(1000, trained_count // 10)

    def needs_rebuild(self) -> str | None:
        if self._trained is None:
            return None
        n, trained = len(self), self._trained_count
        if n > self.retrain_growth * trained:
            return (
                f"ivfpq: {n} vectors, {n / trained:.1f}x the {trained} it was trained on "
                f"(retrain_growth={self.retrain_growth:g})"
            )
        count, recent, fit = self._recent.count, self._recent.mean, self._trained.fit
        if count >= self._recent.size // 2 and recent > fit * self.drift_ratio:
            return (
                f"ivfpq: recent vectors sit {recent:.3f} from their centroids against "
                f"{fit:.3f} at training ({recent / fit:.2f}x > drift_ratio={self.drift_ratio:g})"
            )
        return None

    def state(self) -> dict[str, Any]:
        if self._trained is None:
            return {"trained": False, "held_exact": len(self), "train_min": self.train_min}
        return {
            "trained": True, "nlist": self._trained.nlist, "nprobe": self.probes(),
            "pq": self.pq, "nbits": self.nbits, "opq": self._trained.opq is not None,
            "trained_count": self._trained_count, "train_fit": round(self._trained.fit, 5),
            "recent_fit": round(self._recent.mean, 5), "recent_count": self._recent.count,
        }  # fmt: skip

    # ------------------------------------------------------------------ recall knobs

    def build_mark(self) -> Any:
        return self._trained_count  # 0 until trained; a retrain comes as a new index

    def knobs(self) -> dict[str, int]:
        return {} if self._trained is None else {"nprobe": self.probes(), "rerank": self.rerank}

    def knob_ladder(self) -> list[dict[str, int]]:
        """nprobe up to a quarter of the lists (at least 16), re-rank depth 5 to 40, cheapest
        first by an estimate of the work: codes scanned times ``pq`` table look-ups, plus
        re-ranked vectors times a cache miss and ``dim`` multiply-adds.
        """
        if self._trained is None:
            return []
        nlist = self._trained.nlist
        top = min(nlist, max(16, nlist // 4))
        probes = sorted({min(top, 2**i) for i in range(top.bit_length() + 1)})
        per_list = len(self) / nlist

        def cost(setting: dict[str, int]) -> float:
            scan = setting["nprobe"] * per_list * self.pq
            return scan + 10 * setting["rerank"] * (self.dim + 200)

        ladder = [{"nprobe": p, "rerank": r} for p in probes for r in RERANK_LADDER]
        return sorted(ladder, key=cost)

    def held_out(self, ids: np.ndarray) -> list[VectorIndex]:
        """A copy sharing the lists that never answers ``ids`` (a selector, so the lists probed
        and the re-rank pool stay as a real search's)."""
        import faiss

        view = copy.copy(self)
        keep = id_selector(as_ids(ids))
        view._hidden = _Hidden(faiss.IDSelectorNot(keep.sel), keep)
        return [view]

    def set_knobs(self, **values: int) -> None:
        if "nprobe" in values:
            self.nprobe = max(1, int(values["nprobe"]))
        if "rerank" in values:
            self.rerank = max(1, int(values["rerank"]))

    def memory_bytes(self) -> int:
        if self._trained is None:
            return int(self._buffer.nbytes + self._buffer_ids.nbytes)
        return self._trained.memory_bytes()

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> None:
        write_snapshot(Path(path), self.kind, self.write_into)

    def write_into(self, writer: SnapshotWriter) -> dict[str, Any]:
        """Write the sections of this index (also used when nested in `auto`)."""
        meta: dict[str, Any] = {"dim": self.dim, "trained": self._trained is not None}
        if self._trained is None:
            writer.array("ids", self._buffer_ids)
            writer.array("vectors", self._buffer)
            return meta
        writer.faiss_index("ivf", self._trained.ivf)
        if self._trained.opq is not None:
            writer.vector_transform("opq", self._trained.opq)
        meta.update(
            fit=self._trained.fit, nlist=self._trained.nlist, pq=self.pq, nbits=self.nbits,
            trained_count=self._trained_count, recent=self._recent.entries,
        )  # fmt: skip
        return meta

    @classmethod
    def load(cls, path: Path, dim: int, **params: Any) -> IvfPqIndex:
        with open_snapshot(Path(path), cls.kind) as reader:
            return cls.read_from(reader, dim, **params)

    @classmethod
    def read_from(cls, reader: SnapshotReader, dim: int, **params: Any) -> IvfPqIndex:
        """Training (lists, codebooks) comes from the file; search options from ``params``."""
        index = cls(dim, **params)
        meta = reader.meta
        if meta["dim"] != index.dim:
            raise ValueError(f"ivfpq snapshot has dim {meta['dim']}, expected {index.dim}")
        if not meta["trained"]:
            index._buffer_ids, index._buffer = reader.array("ids"), reader.array("vectors")
            return index
        opq = reader.vector_transform("opq") if reader.has("opq") else None
        ivf = reader.faiss_index("ivf")
        index._trained = training.Trained(ivf, opq, float(meta["fit"]), int(meta["nlist"]))
        index.pq, index.nbits = int(meta["pq"]), int(meta["nbits"])
        index._trained_count = int(meta["trained_count"])
        window = index._window_for(index._trained_count)
        index._recent = training.FitWindow(window, [list(r) for r in meta["recent"]])
        return index
