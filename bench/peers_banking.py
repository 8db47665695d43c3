"""BANKING77 with the real `use-multilingual` encoder, end to end, for all three systems.

One encoder, hubsearch's own ``use-multilingual`` object, is handed to each system as its
embedding function (Chroma: an ``EmbeddingFunction``; txtai: the external ``transform``;
hubsearch: the collection's encoder), so the figures differ only in what each system does
around the model. The model is loaded and warmed before the clock starts (its load time is
reported apart); ingest covers encoding the 10,003 training texts, indexing and persisting,
and kNN@1 is the share of the 3,080 test texts whose top hit has the same intent.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from peers_phases import disk_mb, peak_rss_mb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def load_split(name: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    with open(DATA / f"{name}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [r["text"] for r in rows], [r["category"] for r in rows]


def _encoder() -> tuple[Any, float]:
    from engine import Engine

    t0 = time.perf_counter()
    enc = Engine(tempfile.mkdtemp()).build_encoder("use-multilingual")
    enc.encode(["warm up the model"], "text")
    return enc, time.perf_counter() - t0


def _hubsearch(path: Path, texts: list[str], tests: list[str]) -> tuple[float, float, float, list]:
    from engine import Engine

    t = time.perf_counter()
    col = Engine(path).create("b77", encoder="use-multilingual", index="auto")
    col.encoder.encode(["warm up the model"], "text")
    t0 = time.perf_counter()
    col.add(texts=texts, ids=[str(i) for i in range(len(texts))])
    t1 = time.perf_counter()
    top = [hits[0].id for hits in col.search_many(queries=tests, k=1)]
    return t0 - t, t1 - t0, time.perf_counter() - t1, top


def _chroma(path: Path, texts: list[str], tests: list[str], enc: Any) -> tuple[float, float, list]:
    import chromadb
    from chromadb import Documents, EmbeddingFunction, Embeddings
    from chromadb.config import Settings

    class UseMultilingual(EmbeddingFunction[Documents]):
        def __init__(self) -> None:
            pass

        def __call__(self, input: Documents) -> Embeddings:
            return list(enc.encode(list(input), "text"))

        @staticmethod
        def name() -> str:
            return "hubsearch-use-multilingual"

    client = chromadb.PersistentClient(str(path), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(
        "banking77", configuration={"hnsw": {"space": "ip"}}, embedding_function=UseMultilingual()
    )
    step = client.get_max_batch_size()
    t0 = time.perf_counter()
    for s in range(0, len(texts), step):
        ids = [str(i) for i in range(s, min(s + step, len(texts)))]
        col.add(ids=ids, documents=texts[s : s + step])
    t1 = time.perf_counter()
    top = []
    for s in range(0, len(tests), 512):
        top += [ids[0] for ids in col.query(query_texts=tests[s : s + 512], n_results=1)["ids"]]
    return t1 - t0, time.perf_counter() - t1, top


def _txtai(path: Path, texts: list[str], tests: list[str], enc: Any) -> tuple[float, float, list]:
    from txtai import Embeddings

    def transform(batch: list[str]) -> np.ndarray:
        return enc.encode(list(batch), "text")

    emb = Embeddings({"method": "external", "transform": transform, "content": True})
    t0 = time.perf_counter()
    emb.index((str(i), t, None) for i, t in enumerate(texts))
    emb.save(str(path))
    t1 = time.perf_counter()
    top = [r[0]["id"] for r in emb.batchsearch(tests, 1)]
    return t1 - t0, time.perf_counter() - t1, top


def banking(system: str, path: Path, limit: int | None = None) -> dict[str, Any]:
    texts, intents = load_split("train", limit)
    tests, truth = load_split("test", None if limit is None else limit // 3)
    if system == "hubsearch-auto":
        load_s, ingest, query, top = _hubsearch(path, texts, tests)
    else:
        enc, load_s = _encoder()
        run = _chroma if system == "chroma" else _txtai
        ingest, query, top = run(path, texts, tests, enc)
    acc = float(np.mean([intents[int(t)] == y for t, y in zip(top, truth, strict=True)]))
    return {
        "docs": len(texts),
        "queries": len(tests),
        "model_load_s": load_s,
        "ingest_s": ingest,
        "docs_per_s": len(texts) / ingest,
        "query_s": query,
        "knn1": acc,
        "disk_mb": disk_mb(path),
        "rss_mb": peak_rss_mb(),
    }
