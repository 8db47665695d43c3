"""One small adapter per system, so every phase of bench/peers.py runs the same steps on each.

Each adapter uses its system the way its documentation shows: hubsearch takes the whole batch
in one ``add`` (it commits every 20,000 documents itself), Chroma takes batches of its own
maximum size, txtai takes a generator of ``(id, {"text", ...metadata}, None)`` and is saved
with ``save``. All of them store the text and both metadata fields, and return them with every
hit, so no system skips work the others do. Every system scores by inner product on the same
L2-normalised vectors; no model is loaded anywhere (txtai's external transform looks vectors
up by text, Chroma takes ``embeddings=``).
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


SYSTEMS = {
    "hubsearch-auto": lambda: Hubsearch("auto"),
    "hubsearch-flat": lambda: Hubsearch("flat"),
    "chroma": Chroma,
    "txtai": Txtai,
}
