"""The phases of bench/peers.py; each runs in a fresh process and returns one dict of figures.

A fresh process per phase means every figure includes what a real program pays: imports,
opening the files, first-touch of the index. Peak RSS is the process's own high-water mark
(VmHWM), so it covers the system's imports and anything its threads allocated. Query
and open phases load only the query vectors, so their RSS is the system's; the ingest phase
also holds the input corpus (the same arrays for every system).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from peers_corpus import EXTRA, Corpus, K, doc_id, row_of, texts_and_metadata
from peers_systems import SYSTEMS


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM).

    Not ``ru_maxrss``: a child started by a fork carries its parent's high-water mark across
    ``exec`` in ``ru_maxrss`` (measured here: a 10 MB child of a 330 MB parent reported 332 MB),
    which would floor every phase's figure at the harness's own size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> dict[str, float]:
    """Resident memory now, split into anonymous (heap, arrays) and file-backed (mapped files)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0].lower() + "_mb"] = int(line.split()[1]) / 1024
    return out


def disk_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


def _inputs(corpus: Corpus, start: int, stop: int) -> tuple[list[str], np.ndarray, list, list]:
    rows = np.arange(start, stop)
    vectors = corpus.row_range(start, stop)
    texts, metas = texts_and_metadata(corpus, rows)
    return [doc_id(r) for r in rows.tolist()], vectors, texts, metas


def ingest(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    ids, vectors, texts, metas = _inputs(corpus, 0, corpus.n)
    rss_inputs = peak_rss_mb()
    t0 = time.perf_counter()
    s = SYSTEMS[system]()
    s.create(path, vectors.shape[1])
    s.add(ids, vectors, texts, metas)
    s.persist(path)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "docs_per_s": corpus.n / seconds, "count": s.count()}
    out.update(rss_now_mb())
    s.close()
    return {**out, "rss_mb": peak_rss_mb(), "rss_inputs_mb": rss_inputs, "disk_mb": disk_mb(path)}


def cold_open(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    """Import, open and answer one query: what a fresh worker pays before its first answer."""
    q, _ = corpus.query_set()
    t0 = time.perf_counter()
    s = SYSTEMS[system]()
    s.open(path)
    opened = time.perf_counter()
    s.search(q[0], K, None)
    first = time.perf_counter()
    return {"open_s": opened - t0, "first_query_s": first - t0, "rss_mb": peak_rss_mb()}


def _latencies(s: Any, q: np.ndarray, cats: np.ndarray | None) -> tuple[np.ndarray, list]:
    found, times = [], np.zeros(len(q))
    for i in range(len(q)):
        t = time.perf_counter()
        found.append(s.search(q[i], K, None if cats is None else int(cats[i])))
        times[i] = time.perf_counter() - t
    return times * 1000, found


def _recall(found: list[list[str]], truth: np.ndarray) -> tuple[float, float]:
    hits = [
        len({row_of(d) for d in f} & set(t.tolist())) / K
        for f, t in zip(found, truth, strict=True)
    ]
    short = sum(len(f) < K for f in found) / len(found)
    return float(np.mean(hits)), short


def query(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    q, cats = corpus.query_set()
    plain, filtered = corpus.truth()
    s = SYSTEMS[system]()
    s.open(path)
    s.search(q[0], K, None)  # the first query is the cold-open phase's figure
    out: dict[str, Any] = {}
    for label, c, truth in (("plain", None, plain), ("filtered", cats, filtered)):
        ms, found = _latencies(s, q, c)
        recall, short = _recall(found, truth)
        out[label] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "recall": recall,
            "short_share": short,
        }
    out["settings"] = s.settings()
    return {**out, "rss_mb": peak_rss_mb(), **rss_now_mb()}


def add_more(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    """Reopen the persisted index and append the 1,000 extra documents."""
    ids, vectors, texts, metas = _inputs(corpus, corpus.n, corpus.n + EXTRA)
    t0 = time.perf_counter()
    s = SYSTEMS[system]()
    s.open(path)
    opened = time.perf_counter()
    s.add(ids, vectors, texts, metas)
    s.persist(path)
    seconds = time.perf_counter() - t0
    count = s.count()
    s.close()
    return {"seconds": seconds, "open_s": opened - t0, "count": count, "rss_mb": peak_rss_mb()}


def delete(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    gone = [doc_id(r) for r in corpus.deleted_rows().tolist()]
    t0 = time.perf_counter()
    s = SYSTEMS[system]()
    s.open(path)
    s.delete(gone)
    s.persist(path)
    seconds = time.perf_counter() - t0
    count = s.count()
    s.close()
    return {"seconds": seconds, "count": count, "rss_mb": peak_rss_mb()}


def verify(system: str, corpus: Corpus, path: Path) -> dict[str, Any]:
    """Search with each deleted document's own vector: it and its peers must not come back."""
    rows = corpus.deleted_rows()
    gone = {doc_id(r) for r in rows.tolist()}
    vectors = np.asarray(corpus.vectors(mmap=True)[rows])
    category, _ = corpus.labels()
    s = SYSTEMS[system]()
    s.open(path)
    back_plain = back_filtered = 0
    for r, v in zip(rows.tolist(), vectors, strict=True):
        back_plain += len(gone.intersection(s.search(v, K, None)))
        back_filtered += len(gone.intersection(s.search(v, K, int(category[r]))))
    count = s.count()
    return {
        "count": count,
        "expected": corpus.n + EXTRA - len(rows),
        "resurfaced": back_plain,
        "resurfaced_filtered": back_filtered,
        "disk_mb": disk_mb(path),
        "rss_mb": peak_rss_mb(),
    }


PHASES = {
    "ingest": ingest,
    "open": cold_open,
    "query": query,
    "add": add_more,
    "delete": delete,
    "verify": verify,
}
