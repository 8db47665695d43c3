"""One small adapter per system, so every phase of bench/peers.py runs the same steps on each.

Each adapter uses its system the way its documentation shows: hubsearch takes the whole batch
in one ``add`` (it commits every 20,000 documents itself), Chroma takes batches of its own
maximum size, txtai takes a generator of ``(id, {"text", ...metadata}, None)`` and is saved
with ``save``, LanceDB takes one Arrow table and then builds its indexes. All of them store
the text and both metadata fields, and return them with every hit, so no system skips work
the others do. Every system scores by inner product on the same L2-normalised vectors; no
model is loaded anywhere (txtai's external transform looks vectors up by text, Chroma takes
``embeddings=``, LanceDB a vector column).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np


class Hubsearch:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"hubsearch-{kind}"
        self.col: Any = None

    def create(self, path: Path, dim: int) -> None:
        from engine import Engine

        self.col = Engine(path).create(
            "bench", encoder="precomputed", index=self.kind, options={"dim": dim}
        )

    def open(self, path: Path) -> None:
        from engine import Engine

        self.col = Engine(path).open("bench")

    def add(self, ids: list[str], vectors: np.ndarray, texts: list[str], metas: list[dict]) -> None:
        self.col.add(texts=texts, vectors=vectors, ids=ids, metadata=metas)

    def persist(self, path: Path) -> None:
        """Nothing to do: every add and delete is committed to disk before it returns."""

    def search(self, vector: np.ndarray, k: int, category: int | None) -> list[str]:
        where = None if category is None else {"category": int(category)}
        return [h.id for h in self.col.search(vector=vector, k=k, where=where)]

    def delete(self, ids: list[str]) -> None:
        self.col.delete(ids=ids)

    def count(self) -> int:
        return self.col.count()

    def close(self) -> None:
        self.col.close()

    def settings(self) -> dict[str, Any]:
        m = self.col.manifest
        state = m.index.get("state") or {}
        active = state.get("active", m.index["kind"])
        params = dict(m.index.get("params") or {})
        if active == "hnsw":  # defaults are not written to the manifest: read them off the class
            from indexes.hnsw import HnswIndex

            sub = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("hnsw.")}
            graph = HnswIndex(m.dim, **(sub if self.kind == "auto" else params))
            params = {"M": graph.M, "efConstruction": graph.ef_construction,
                      "efSearch": graph.ef_search, **params}
        return {
            "version": version("hubsearch"),
            "index": self.kind if self.kind != "auto" else f"auto -> {active}",
            "params": params,
            "switches": state.get("switches", []),
        }


class Chroma:
    name = "chroma"

    def __init__(self) -> None:
        self.client: Any = None
        self.col: Any = None

    def _client(self, path: Path) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False)
        )

    def create(self, path: Path, dim: int) -> None:
        self.client = self._client(path)
        self.col = self.client.create_collection(
            "bench", configuration={"hnsw": {"space": "ip"}}, embedding_function=None
        )

    def open(self, path: Path) -> None:
        self.client = self._client(path)
        self.col = self.client.get_collection("bench", embedding_function=None)

    def add(self, ids: list[str], vectors: np.ndarray, texts: list[str], metas: list[dict]) -> None:
        step = self.client.get_max_batch_size()
        for s in range(0, len(ids), step):
            self.col.add(
                ids=ids[s : s + step],
                embeddings=vectors[s : s + step],
                documents=texts[s : s + step],
                metadatas=metas[s : s + step],
            )

    def persist(self, path: Path) -> None:
        """Nothing to do: PersistentClient writes through its log before ``add`` returns."""

    def search(self, vector: np.ndarray, k: int, category: int | None) -> list[str]:
        where = None if category is None else {"category": int(category)}
        found = self.col.query(query_embeddings=[vector], n_results=k, where=where)
        return list(found["ids"][0])

    def delete(self, ids: list[str]) -> None:
        self.col.delete(ids=ids)

    def count(self) -> int:
        return self.col.count()

    def close(self) -> None:
        self.col = self.client = None

    def settings(self) -> dict[str, Any]:
        conf = self.col.configuration if self.col is not None else {}
        return {
            "version": version("chromadb"),
            "index": "hnsw (default)",
            "params": conf.get("hnsw"),
        }


_TXTAI_SQL = "select id, text, category, lang, score from txtai where similar(:q)"


class Txtai:
    """txtai with ``content`` on (SQLite documents, needed for metadata filters), FAISS backend."""

    name = "txtai"

    def __init__(self) -> None:
        self.emb: Any = None
        self._vectors: dict[str, np.ndarray] = {}

    def _config(self) -> dict[str, Any]:
        table = self._vectors

        def transform(texts: list[Any]) -> np.ndarray:  # a plain function: txtai calls others
            return np.stack([t if isinstance(t, np.ndarray) else table[t] for t in texts])

        return {"method": "external", "transform": transform, "content": True, "backend": "faiss"}

    def create(self, path: Path, dim: int) -> None:
        from txtai import Embeddings

        self.emb = Embeddings(self._config())

    def open(self, path: Path) -> None:
        from txtai import Embeddings

        self.emb = Embeddings()
        self.emb.load(str(path), config={"transform": self._config()["transform"]})

    def add(self, ids: list[str], vectors: np.ndarray, texts: list[str], metas: list[dict]) -> None:
        self._vectors.clear()
        self._vectors.update(zip(texts, vectors, strict=True))
        rows = ((i, {"text": t, **m}, None) for i, t, m in zip(ids, texts, metas, strict=True))
        self.emb.upsert(rows)  # upsert on an empty index is txtai's index()
        self._vectors.clear()

    def persist(self, path: Path) -> None:
        self.emb.save(str(path))

    def search(self, vector: np.ndarray, k: int, category: int | None) -> list[str]:
        if category is None:
            found = self.emb.search(_TXTAI_SQL, k, parameters={"q": vector})
        else:
            sql = _TXTAI_SQL + " and category = :c"
            found = self.emb.search(sql, k, parameters={"q": vector, "c": int(category)})
        return [r["id"] for r in found]

    def delete(self, ids: list[str]) -> None:
        self.emb.delete(ids)

    def count(self) -> int:
        return self.emb.count()

    def close(self) -> None:
        self.emb.close()

    def settings(self) -> dict[str, Any]:
        conf = self.emb.config or {}
        ann = getattr(self.emb.ann, "backend", None)
        return {
            "version": version("txtai"),
            "index": f"faiss {(conf.get('faiss') or {}).get('components') or type(ann).__name__}",
            "params": {"nprobe": getattr(ann, "nprobe", None), "content": "sqlite"},
        }


class LanceDB:
    """LanceDB (embedded, Lance files) as its documentation shows for this workload.

    ``ivfpq``: after the one ``create_table`` the vector column gets an ``IVF_PQ`` index
    (LanceDB's default kind, and the one its docs advise when searches often carry a ``where``
    filter; partitions and sub-vectors at LanceDB's defaults for the size), metric ``dot``, and
    ``category`` a ``BITMAP`` scalar index (the docs' choice for a column of few values); both
    builds count in the ingest. Searches prefilter (``where(..., prefilter=True)``). Its
    documented query knobs, ``nprobes`` and ``refine_factor`` (re-rank ``refine_factor * k``
    candidates on the full vectors; advised 5-50), are chosen by :meth:`calibrate` for the recall
    hubsearch reached in the same run ("p50 at matched recall").
    ``flat``: no vector index, exact scans (the docs: below about 100,000 rows an index is
    usually unnecessary), same scalar index and prefilter.
    """

    #: (nprobes, refine_factor) in rising cost; None: LanceDB's own default for that knob.
    SWEEP = ((None, None), (20, 5), (20, 10), (30, 10), (40, 10), (60, 20), (100, 20),
             (160, 30), (256, 50))  # fmt: skip

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"lancedb-{kind}"
        self.db: Any = None
        self.tbl: Any = None
        self.knobs: dict[str | None, tuple[int | None, int | None]] = {}
        self._filtering = False

    def _connect(self, path: Path) -> None:
        import lancedb

        self.db = lancedb.connect(str(path))

    def create(self, path: Path, dim: int) -> None:
        self._connect(path)
        self.dim = dim

    def open(self, path: Path) -> None:
        self._connect(path)
        self.tbl = self.db.open_table("bench")

    def add(self, ids: list[str], vectors: np.ndarray, texts: list[str], metas: list[dict]) -> None:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        data = pa.table({
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "category": pa.array([m["category"] for m in metas], pa.int64()),
            "lang": pa.array([m["lang"] for m in metas], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        })  # fmt: skip
        if self.tbl is None:
            self.tbl = self.db.create_table("bench", data=data)
            if self.kind == "ivfpq":
                self.tbl.create_index(metric="dot", vector_column_name="vector",
                                      index_type="IVF_PQ")  # fmt: skip
            self.tbl.create_scalar_index("category", index_type="BITMAP")
        else:
            self.tbl.add(data)

    def persist(self, path: Path) -> None:
        """Nothing to do: every ``add`` and ``delete`` writes a new table version to disk."""

    def _query(self, vector: np.ndarray, k: int, category: int | None) -> Any:
        q = self.tbl.search(vector, vector_column_name="vector").distance_type("dot").limit(k)
        # _distance named: LanceDB warns on every search that leaves it out (hubsearch returns
        # scores too).
        q = q.select(["id", "text", "category", "lang", "_distance"])
        nprobes, refine = self.knobs.get("filtered" if category is not None else "plain",
                                         (None, None))  # fmt: skip
        if nprobes is not None:
            q = q.nprobes(nprobes)
        if refine is not None:
            q = q.refine_factor(refine)
        if category is not None:
            q = q.where(f"category = {int(category)}", prefilter=True)
        return q

    def search(self, vector: np.ndarray, k: int, category: int | None) -> list[str]:
        return self._query(vector, k, category).to_arrow()["id"].to_pylist()

    def calibrate(self, label: str, run: Any, target: float) -> dict[str, Any]:
        """Pick the cheapest (nprobes, refine_factor) of :attr:`SWEEP` whose recall on the
        calibration queries (``run()`` -> recall) reaches ``target``; else the best one."""
        if self.kind != "ivfpq":
            return {"target": target, "knobs": "exact scan"}
        tried = []
        for knobs in self.SWEEP:
            self.knobs[label] = knobs
            tried.append((run(), knobs))
            if tried[-1][0] >= target:
                break
        best = next((t for t in tried if t[0] >= target), max(tried, key=lambda t: t[0]))
        self.knobs[label] = best[1]
        return {"target": target, "nprobes": best[1][0], "refine_factor": best[1][1],
                "calibration_recall": best[0], "tried": tried}  # fmt: skip

    def delete(self, ids: list[str]) -> None:
        listed = ", ".join(f"'{i}'" for i in ids)
        self.tbl.delete(f"id IN ({listed})")

    def count(self) -> int:
        return self.tbl.count_rows()

    def close(self) -> None:
        self.tbl = self.db = None

    def settings(self) -> dict[str, Any]:
        indices = {}
        for ix in self.tbl.list_indices():
            stats = self.tbl.index_stats(ix.name)
            indices[ix.name] = {
                "type": str(getattr(ix, "index_type", "")),
                "partitions": getattr(stats, "num_indices", None),
                "stats": str(stats)[:300],
            }
        return {
            "version": version("lancedb"),
            "index": "IVF_PQ (dot) + BITMAP(category)" if self.kind == "ivfpq"
            else "none (exact) + BITMAP(category)",
            "params": {"knobs": self.knobs, "indices": indices},
        }


SYSTEMS = {
    "hubsearch-auto": lambda: Hubsearch("auto"),
    "hubsearch-flat": lambda: Hubsearch("flat"),
    "chroma": Chroma,
    "txtai": Txtai,
    "lancedb-ivfpq": lambda: LanceDB("ivfpq"),
    "lancedb-flat": lambda: LanceDB("flat"),
}
#: The Python package each system needs; bench/peers.py skips those not installed.
PACKAGES = {
    "hubsearch-auto": "engine",
    "hubsearch-flat": "engine",
    "chroma": "chromadb",
    "txtai": "txtai",
    "lancedb-ivfpq": "lancedb",
    "lancedb-flat": "lancedb",
}
