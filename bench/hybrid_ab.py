"""Keyword search before and after a change, measured in one run on one collection.

    git archive REV engine indexes plugins | tar -x -C /tmp/before
    for tree in /tmp/before $PWD /tmp/before $PWD; do
        PYTHONPATH=$tree python bench/hybrid_ab.py /tmp/hybrid-ab  # [N documents]
    done

Each run (with PYTHONPATH at one version's tree) opens the same 100,000-passage collection
(built by the first run, random unit vectors, `flat`, keyword index; the store format did not
change), times 300 keyword and 300 hybrid queries (wall and CPU p50), then ingests the
100,000 passages into fresh collections without and with a keyword index (wall and CPU), and
prints one JSON line. Alternate the versions: the shared machine's load drifts.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# bench/engine.py would shadow the engine package, and the engine must come from PYTHONPATH
# (the tree under test): bench/ goes last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

from hybrid_corpus import build, passages  # noqa: E402

import engine  # noqa: E402
from engine import Engine, hybrid_search  # noqa: E402
from engine import hybrid as H  # noqa: E402

N = 100_000


def timed(run, items) -> tuple[float, float]:
    wall, cpu = [], []
    for item in items:
        t, c = time.perf_counter(), time.process_time()
        run(*item)
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    return statistics.median(wall), statistics.median(cpu)


def ingest(texts, vecs, keyword: bool) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="hybrid-ab-"))
    col = Engine(home).create(
        "s", encoder="precomputed", index="flat", options={"dim": 512}, keyword=keyword
    )
    t, c = time.perf_counter(), time.process_time()
    col.add(texts=texts, vectors=vecs, ids=[str(i) for i in range(len(texts))])
    took = time.perf_counter() - t, time.process_time() - c
    col.close()
    shutil.rmtree(home, ignore_errors=True)
    return took


def main(work: Path, n: int = N) -> None:
    texts = passages(n)
    vecs = np.random.default_rng(0).standard_normal((len(texts), 512)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = [r["query"] for r in build(HERE / "out" / "manpages.jsonl") if r["ask"]][:300]
    qvecs = np.random.default_rng(1).standard_normal((len(queries), 512)).astype(np.float32)
    if not (work / "s").exists():
        col = Engine(work).create(
            "s", encoder="precomputed", index="flat", options={"dim": 512}, keyword=True
        )
        col.add(texts=texts, vectors=vecs, ids=[str(i) for i in range(len(texts))])
        col.close()
    col = Engine(work).open("s")
    for q in queries[:20]:  # warm the page cache and the term statistics
        col.search(q, mode="keyword", k=10)

    def hybrid(text, q):
        hybrid_search.run(
            col.view, col.planner, col.store, [text], q[None, :], 10, None,
            H.DEFAULT_ALPHA, H.DEFAULT_FUSION,
        )  # fmt: skip

    out = {
        "engine": engine.__file__,
        "keyword_p50_ms_wall_cpu": timed(
            lambda text: col.search(text, mode="keyword", k=10), [(q,) for q in queries]
        ),
        "hybrid_p50_ms_wall_cpu": timed(hybrid, list(zip(queries, qvecs, strict=True))),
    }
    col.close()
    out["ingest_s_wall_cpu_without"] = ingest(texts, vecs, False)
    out["ingest_s_wall_cpu_with"] = ingest(texts, vecs, True)
    out["load"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hybrid-ab"),
        int(sys.argv[2]) if len(sys.argv) > 2 else N,
    )
