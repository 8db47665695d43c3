"""Search throughput of one shared Collection at 1, 2 and 4 request threads.

    python bench/threads.py [--n 100000] [--dim 512] [--kinds flat hnsw] [--seconds 8]

A backend shares one `Engine` and one `Collection` between its request threads. Searches hold
the index's lock in shared mode and FAISS / numpy release the GIL, so on 2 cores two threads
should answer nearly twice the queries of one; past the core count the figure should hold, not
fall. Each row: queries/s over all threads, the ratio to 1 thread of the same kind and query
type, and the per-query p50 / p99. Queries are stored vectors with noise; `filtered` matches
5 % of the documents (answered exactly from the stored vectors).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))


def build(home: Path, kind: str, n: int, dim: int) -> tuple[object, np.ndarray]:
    from engine import Engine

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    col = Engine(home).create(kind, encoder="precomputed", index=kind, options={"dim": dim})
    started = time.perf_counter()
    col.add(
        vectors=x,
        ids=[f"d{i}" for i in range(n)],
        metadata=[{"bucket": i % 20} for i in range(n)],
    )
    col.checkpoint()
    print(f"# built {kind}: {n} x {dim} in {time.perf_counter() - started:.1f} s", flush=True)
    noise = rng.normal(scale=0.05, size=(4096, dim)).astype(np.float32)
    queries = x[rng.integers(0, n, size=4096)] + noise
    return col, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def measure(col, queries: np.ndarray, threads: int, seconds: float, where) -> tuple[float, list]:
    """Queries/s of ``threads`` threads searching ``col`` for ``seconds``, and all latencies."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def loop(offset: int) -> None:
        mine, i = [], offset
        start.wait()
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            col.search(vector=queries[i % len(queries)], k=10, where=where)
            mine.append(time.perf_counter() - t)
            i += threads
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=loop, args=(j,)) for j in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in pool:
        t.join()
    return len(latencies) / (time.perf_counter() - began), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'kind':6} {'query':9} {'threads':>7} {'q/s':>8} {'x 1 thr':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            col, queries = build(Path(tmp), kind, args.n, args.dim)
            for label, where in (("unfilter", None), ("filtered", {"bucket": 3})):
                col.search(vector=queries[0], k=10, where=where)  # warm the filter cache
                base = None
                for threads in args.threads:
                    qps, lat = measure(col, queries, threads, args.seconds, where)
                    base = base or qps
                    p50, p99 = np.percentile(np.asarray(lat) * 1000, [50, 99])
                    print(f"{kind:6} {label:9} {threads:7d} {qps:8.0f} {qps / base:8.2f} "
                          f"{p50:7.2f} {p99:7.2f}", flush=True)  # fmt: skip
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
