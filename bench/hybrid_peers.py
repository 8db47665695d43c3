"""Keyword and hybrid search side by side with LanceDB on the manual-page known-item benchmark.

    python bench/hybrid.py quality                     # first: caches the corpus and its vectors
    /work/venv-hybrid/bin/python bench/hybrid_peers.py # a venv with `pip install lancedb`

The same 10,000 documents, the same use-multilingual vectors (bench/out/, made by
bench/hybrid.py), the same test half of the queries and the same latency sample as
bench/hybrid.py (bench/hybrid_corpus.py `halves`, `timed`), so the figures stand beside
hubsearch's in docs/benchmarks.md. LanceDB as its documentation sets it up: a table of id, text
and vector, its native full-text index with default settings (`create_fts_index`: simple
tokenizer, lower case, English stemming, stop words removed, ASCII folding), exhaustive vector
search (no ANN index: the same as hubsearch's `flat`), and hybrid search through its two stock
rerankers: `RRFReranker` (its default, k=60) and `LinearCombinationReranker` (weight 0.7 on
the vector side). Each side fetches 50 candidates for the hybrid, as hubsearch does for k=10.

Runs without hubsearch installed (LanceDB's environment need not hold TensorFlow).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))

from hybrid_corpus import build, halves, metrics, timed  # noqa: E402

OUT = HERE / "out"
DEPTH = 50


def load_avg() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def lancedb_table(docs: list[str], vecs: np.ndarray):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(tempfile.mkdtemp(prefix="hybrid-peers-"))
    flat = pa.array(vecs.astype(np.float32).ravel())
    data = pa.table(
        {
            "id": pa.array(range(len(docs)), pa.int64()),
            "text": docs,
            "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]),
        }
    )
    table = db.create_table("man", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_fts_index is deprecated for create_index
        table.create_fts_index("text")
    return table


def searchers(table):
    from lancedb.rerankers import LinearCombinationReranker, RRFReranker

    def ids(query) -> list[int]:
        return [r["id"] for r in query.to_list()]

    def keyword(text, vec, k=10):
        return ids(table.search(text, query_type="fts").select(["id"]).limit(k))

    def vector(text, vec, k=10):
        return ids(table.search(vec).select(["id"]).limit(k))

    def hybrid(reranker):
        def run(text, vec, k=10):
            query = (
                table.search(query_type="hybrid")
                .vector(vec)
                .text(text)
                .select(["id"])
                .limit(DEPTH)  # candidates per side; the fused list is cut to k below
                .rerank(reranker=reranker)
            )
            return ids(query)[:k]

        return run

    return {
        "keyword (native FTS)": keyword,
        "vector (exhaustive)": vector,
        "hybrid RRF (default)": hybrid(RRFReranker()),
        "hybrid linear 0.7": hybrid(LinearCombinationReranker()),
    }


def main() -> None:
    rows = build(OUT / "manpages.jsonl")
    asked = [i for i, r in enumerate(rows) if r["ask"]]
    dvecs = np.load(OUT / "manpages-docs.use-m.npy")
    qvecs = np.load(OUT / "manpages-queries.use-m.npy")
    assert len(dvecs) == len(rows) and len(qvecs) == len(asked), "run bench/hybrid.py first"
    _, test = halves(len(asked))
    sample = timed(test)
    import lancedb

    t0 = time.perf_counter()
    table = lancedb_table([r["doc"] for r in rows], dvecs)
    print(
        f"LanceDB {lancedb.__version__}: {len(rows):,} manual pages loaded and FTS-indexed in "
        f"{time.perf_counter() - t0:.1f} s; test half {len(test):,} queries; {load_avg()}"
    )
    print(f"  {'mode':<22} MRR@10  recall@10  errors  p50 ms ({len(sample)} queries)")
    for name, search in searchers(table).items():
        rankings, errors = [], 0
        for i in test:
            try:
                rankings.append(search(rows[asked[i]]["query"], qvecs[i]))
            except Exception:  # a query its parser refuses: counted, ranked as a miss
                errors += 1
                rankings.append([])
        mrr, rec = metrics(rankings, [asked[i] for i in test])
        wall, cpu = [], []
        for i in sample:
            t, c = time.perf_counter(), time.process_time()
            with contextlib.suppress(Exception):  # refused queries are timed as they fail
                search(rows[asked[i]]["query"], qvecs[i])
            wall.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (time.process_time() - c))
        print(
            f"  {name:<22} {mrr:6.1f}  {rec:9.1f}  {errors:6d}  {statistics.median(wall):6.2f}"
            f"  (CPU {statistics.median(cpu):.2f}, all of its threads)"
        )
    print(load_avg())


if __name__ == "__main__":
    main()
