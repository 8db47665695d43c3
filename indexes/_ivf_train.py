"""Training and fit measurement for `ivfpq`, kept apart from its search and upkeep.

Training turns a sample of the collection into coarse centroids (IVF), product-quantiser
codebooks (PQ) and optionally an OPQ rotation. The same module measures how well the centroids
fit vectors: the mean of ``1 - <x, c>`` between a vector and its nearest centroid (centroids
are unit length, FAISS trains them spherically for inner product). Measured on held-out vectors
at training time, it is the yardstick drift detection compares new vectors against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexes import gpu
from indexes._exact import sample_rows
from indexes._threads import faiss_threads

#: Vectors per coarse centroid in the training sample (FAISS's k-means wants at least 39).
POINTS_PER_LIST = 64
#: Vectors per PQ codebook entry used to train the product quantiser.
POINTS_PER_CODE = 40
#: Vectors measured for the fit, at training and per add.
FIT_PROBE = 2048


def nlist_for(n: int) -> int:
    """Coarse lists for n vectors: the power of two nearest sqrt(n), with >= 39 vectors each."""
    nlist = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1)))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return max(1, nlist)


def min_training(nbits: int, nlist: int | None) -> int:
    """Default ``train_min``: 39 vectors per PQ code and per list (FAISS's k-means floor)
    plus the held-out vectors of the drift yardstick."""
    return 39 * max(2**nbits, nlist or 0) + FIT_PROBE


def default_pq(dim: int) -> int:
    """Sub-quantisers: one per 8 dimensions, at most 64 (64 bytes a vector at 8 bits)."""
    m = max(1, min(64, dim // 8))
    while dim % m:
        m -= 1
    return m


@dataclass
class Trained:
    """A trained, still empty IVF-PQ index with its optional rotation and its fit."""

    ivf: Any
    opq: Any | None
    fit: float
    nlist: int

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.opq is None else self.opq.apply(vectors)

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """``1 - <x, c>`` to the nearest centroid for (a sample of) ``vectors``."""
        probe = vectors[sample_rows(len(vectors), FIT_PROBE, seed=len(vectors))]
        scores, _ = self.ivf.quantizer.search(self.transform(probe), 1)
        return 1.0 - scores[:, 0]

    def ids(self) -> np.ndarray:
        """Every id in the lists, list by list."""
        import faiss

        lists = self.ivf.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def memory_bytes(self) -> int:
        """Codes and ids in the lists, centroids, codebooks, rotation."""
        ivf, dim = self.ivf, self.ivf.d
        tables = ivf.nlist * dim * 4 + ivf.pq.centroids.size() * 4
        tables += ivf.precomputed_table.size() * 4 + (0 if self.opq is None else dim * dim * 4)
        return int(ivf.ntotal * (ivf.code_size + 8) + tables)


@dataclass
class FitWindow:
    """Mean distance to the centroids over the latest adds, about ``size`` vectors of them."""

    size: int
    entries: list[list[float]] = field(default_factory=list)  # [vectors, mean], oldest first

    def add(self, count: int, mean: float) -> None:
        self.entries.append([count, mean])
        seen = 0
        for keep, (vectors, _) in enumerate(reversed(self.entries)):
            seen += vectors
            if seen >= self.size:
                del self.entries[: len(self.entries) - keep - 1]
                break

    @property
    def count(self) -> int:
        return int(sum(c for c, _ in self.entries))

    @property
    def mean(self) -> float:
        count = self.count
        return sum(c * d for c, d in self.entries) / count if count else 0.0


def gather(parts: Sequence[tuple[np.ndarray, Any]], rows: np.ndarray) -> np.ndarray:
    """Rows (numbered across the concatenation of ``parts``) as one float32 array."""
    out, start = [], 0
    for _, vectors in parts:
        stop = start + len(vectors)
        inside = rows[(rows >= start) & (rows < stop)] - start
        if len(inside):
            out.append(np.asarray(vectors[inside], dtype=np.float32))
        start = stop
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def train(
    parts: Sequence[tuple[np.ndarray, Any]],
    dim: int,
    *,
    nlist: int | None,
    pq: int,
    nbits: int,
    opq: bool,
    sample: int | None,
    gpu_mode: str,
) -> Trained:
    """Train on a sample of ``parts`` (pairs of ids and vectors, vectors may be memmaps)."""
    import faiss

    n = sum(len(ids) for ids, _ in parts)
    nlist = min(nlist or nlist_for(n), n)
    size = sample or max(POINTS_PER_LIST * nlist, POINTS_PER_CODE * 2**nbits)
    # Keep some vectors out of training even when the collection is small: the drift yardstick
    # must be measured on vectors the centroids were not fitted to, as future adds will be
    # (fitted ones sit ~5 % closer, which would read as drift).
    held = max(0, min(FIT_PROBE, n // 5, n - max(nlist, 2**nbits)))  # see min_training
    rows = sample_rows(n, min(size, n - held))
    x = np.ascontiguousarray(gather(parts, rows))
    rotation = None
    if opq:
        rotation = faiss.OPQMatrix(dim, pq)
        rotation.max_train_points = POINTS_PER_CODE * 256  # its PQ has 256 codes per part
        rotation.niter = 12  # alternations of PQ and rotation; FAISS's 50 take minutes
        with faiss_threads(1):  # small k-means again (see below)
            rotation.train(x)
        x = rotation.apply(x)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids(x, nlist, gpu_mode))
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, pq, nbits, faiss.METRIC_INNER_PRODUCT)
    ivf.pq.cp.max_points_per_centroid = POINTS_PER_CODE
    ivf.pq.cp.niter = 12  # PQ training dominates; more iterations barely change recall
    helper = gpu.flat_index(dim // pq, inner_product=False, mode=gpu_mode)
    if helper is not None:
        ivf.pq.assign_index = helper
    # The quantizer is trained, so this trains only the PQ: dozens of tiny k-means whose
    # parallel regions cost more than they gain (3x slower on 2 busy cores), so one thread.
    with faiss_threads(1 if helper is None else None):
        ivf.train(x)
    ivf.pq.assign_index = None
    unseen = np.setdiff1d(np.arange(n), rows, assume_unique=True) if n > len(rows) else rows
    held_out = gather(parts, unseen[sample_rows(len(unseen), FIT_PROBE, seed=4321)])
    trained = Trained(ivf, rotation, 0.0, nlist)
    trained.fit = float(np.mean(trained.distances(held_out)))
    return trained


def centroids(x: np.ndarray, nlist: int, gpu_mode: str) -> np.ndarray:
    """Spherical k-means centroids (unit length, so ``1 - <x, c>`` is a distance)."""
    import faiss

    dim = x.shape[1]
    clustering = faiss.Clustering(dim, nlist)
    clustering.spherical = True
    clustering.niter = 10
    assign = gpu.flat_index(dim, inner_product=True, mode=gpu_mode) or faiss.IndexFlatIP(dim)
    clustering.train(x, assign)
    return faiss.vector_to_array(clustering.centroids).reshape(nlist, dim)


def compact(ivf: Any) -> Any:
    """A copy without the slack of grown inverted lists (FAISS grows them by doubling)."""
    import faiss

    return faiss.deserialize_index(faiss.serialize_index(ivf))
