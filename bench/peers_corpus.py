"""The shared corpus of bench/peers.py: clustered synthetic vectors, metadata and exact answers.

Every system reads the same files, so the figures compare engines, not data. Vectors are drawn
around 100 cluster centres of uneven size, with the spread inside a cluster lying mostly in a
48-dimensional subspace (real sentence embeddings have a low intrinsic dimension; isotropic
512-d noise would make every neighbour equally far and punish any graph index unfairly).
Metadata is independent of the vectors, so a category filter keeps 1 document in 20 spread over
every cluster: the case where filtering after an approximate search loses results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 512
CATEGORIES = 20
LANGS = ("en", "de", "fr", "es", "zh")
EXTRA = 1000  # documents the "add 1,000" phase appends
WORDS = [
    "card", "pin", "transfer", "refund", "fee", "account", "balance", "limit", "top-up",
    "exchange", "rate", "cash", "atm", "verify", "identity", "password", "phone", "lost",
    "stolen", "declined", "pending", "charge", "salary", "travel", "freeze",
]
K = 10


@dataclass(frozen=True)
class Corpus:
    """Paths of one corpus on disk; arrays are loaded on demand so each phase pays only its own."""

    folder: Path
    n: int
    queries: int

    def vectors(self, mmap: bool = False) -> np.ndarray:
        """All ``n + EXTRA`` document vectors (rows ``n`` onward are the 'add' batch)."""
        return np.load(self.folder / "docs.npy", mmap_mode="r" if mmap else None)

    def row_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` read into memory without mapping the file.

        Mapped pages would count in the process's peak RSS on top of the copy, inflating every
        system's figure by the size of the corpus.
        """
        with open(self.folder / "docs.npy", "rb") as f:
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            f.seek(start * shape[1] * dtype.itemsize, 1)
            out = np.fromfile(f, dtype=dtype, count=(stop - start) * shape[1])
        return out.reshape(stop - start, shape[1])

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        data = np.load(self.folder / "labels.npz")
        return data["category"], data["lang"]

    def query_set(self) -> tuple[np.ndarray, np.ndarray]:
        data = np.load(self.folder / "queries.npz")
        return data["vectors"], data["category"]

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-K rows per query: unfiltered, and within the query's category."""
        data = np.load(self.folder / "truth.npz")
        return data["plain"], data["filtered"]

    def deleted_rows(self) -> np.ndarray:
        """The 1,000 original documents the delete phase removes, spread over the corpus."""
        return np.linspace(0, self.n - 1, min(1000, self.n // 2)).astype(np.int64)


def doc_id(row: int) -> str:
    return f"d{row}"


def row_of(doc: str) -> int:
    return int(doc[1:])


def texts_and_metadata(corpus: Corpus, rows: np.ndarray) -> tuple[list[str], list[dict]]:
    category, lang = corpus.labels()
    picks = np.random.default_rng(7).integers(0, len(WORDS), size=(corpus.n + EXTRA, 5))
    texts = [" ".join(WORDS[j] for j in picks[r]) + f" #{r}" for r in rows.tolist()]
    metas = [
        {"category": int(category[r]), "lang": LANGS[int(lang[r])]} for r in rows.tolist()
    ]
    return texts, metas


def _draw(rng: np.random.Generator, n: int, centres: np.ndarray, basis: np.ndarray,
          share: np.ndarray) -> np.ndarray:
    cluster = rng.choice(len(centres), size=n, p=share)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        z = rng.standard_normal((m, basis.shape[0]), dtype=np.float32)
        iso = rng.standard_normal((m, DIM), dtype=np.float32) * np.float32(0.25 / np.sqrt(DIM))
        x = centres[cluster[start : start + m]] + z @ basis + iso
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _exact_top(q: np.ndarray, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    scores = q @ x.T
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return rows[np.take_along_axis(top, order, axis=1)]


def build(folder: Path, n: int, queries: int = 1000, seed: int = 0) -> Corpus:
    """Write (or reuse) the corpus of ``n`` documents and its exact answers under ``folder``."""
    corpus = Corpus(folder, n, queries)
    stamp = folder / "corpus.json"
    spec = {"n": n, "queries": queries, "seed": seed, "dim": DIM, "version": 2}
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return corpus
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = rng.standard_normal((48, DIM)).astype(np.float32) * np.float32(0.7 / np.sqrt(48 * DIM))
    share = 1.0 / np.arange(1, 101) ** 0.7
    share /= share.sum()
    docs = _draw(np.random.default_rng(seed + 1), n + EXTRA, centres, basis, share)
    category = np.random.default_rng(seed + 2).integers(0, CATEGORIES, n + EXTRA)
    lang = np.random.default_rng(seed + 3).integers(0, len(LANGS), n + EXTRA)
    qv = _draw(np.random.default_rng(seed + 4), queries, centres, basis, share)
    qcat = np.arange(queries) % CATEGORIES
    base = docs[:n]
    plain = np.concatenate(
        [_exact_top(qv[s : s + 100], base, np.arange(n)) for s in range(0, queries, 100)]
    )
    filtered = np.zeros((queries, K), np.int64)
    for c in range(CATEGORIES):
        rows = np.flatnonzero(category[:n] == c)
        asked = np.flatnonzero(qcat == c)
        filtered[asked] = _exact_top(qv[asked], base[rows], rows)
    np.save(folder / "docs.npy", docs)
    np.savez(folder / "labels.npz", category=category, lang=lang)
    np.savez(folder / "queries.npz", vectors=qv, category=qcat)
    np.savez(folder / "truth.npz", plain=plain, filtered=filtered)
    stamp.write_text(json.dumps(spec))
    return corpus
