"""Disk, cold open, ingest and query of a `hubsearch-auto` collection: this tree against another.

    python bench/disk.py --before /path/to/older/tree [--n 100000] [--opens 7] [--json FILE]
    python bench/disk.py --keyword-share [--n 100000]
    python bench/disk.py --formats HOME [--opens 9]

``--before`` is a source tree of an earlier version (``git archive <commit> | tar -x -C DIR``).
Both trees run the peers benchmark's hubsearch phases (bench/peers_phases.py: ingest with
texts and metadata, cold open = import + open + first answer, 1,000 plain and filtered queries),
each phase in a fresh process started through that tree's own ``bench/peers.py``, on the same
corpus (bench/peers_corpus.py). Runs alternate between the trees (ABBA...) so that a change in
machine load hits both alike; medians are reported, with the load average around each phase.
The disk figure is split by file (exact vectors, index snapshot, SQLite store) and the store by
table, so the keyword index's (FTS5) share shows. The peers corpus is stored with precomputed
vectors, which get no keyword index unless asked; ``--keyword-share`` stores the same documents
(texts, metadata, vectors) in a `flat` collection with ``keyword=True`` and prints its split.

``--formats HOME`` isolates what changed on open: it copies the collection ``bench`` of HOME
(written by this tree, its graph snapshot without vectors), rewrites the copy's snapshot in the
earlier format (vectors inside, CRC updated), and times open + first answer, then 300 queries,
in fresh processes of this tree alternating between the two, imports excluded; the CPU time
of open + first answer is reported beside the wall time, being far less sensitive to load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from peers import MARK  # noqa: E402  (bench/ is on the path when run as a script)
from peers_corpus import build  # noqa: E402

SYSTEM = "hubsearch-auto"


def phase(tree: Path, name: str, n: int, path: Path, corpus: Path, queries: int) -> dict:
    """One phase of the peers benchmark in a fresh process of ``tree``'s code."""
    cmd = [sys.executable, str(tree / "bench" / "peers.py"), "--phase", name, "--system",
           SYSTEM, "--size", str(n), "--path", str(path), "--corpus", str(corpus),
           "--queries", str(queries)]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith(MARK)]
    if done.returncode or not lines:
        raise SystemExit(f"{tree}: phase {name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len(MARK):]), "load": load}


def breakdown(path: Path) -> dict[str, float]:
    """MB on disk by part: exact vectors, index snapshot, store (keyword index apart)."""
    parts: dict[str, float] = {}
    for file in path.rglob("*"):
        if not file.is_file():
            continue
        rel = file.relative_to(path).as_posix()
        if "/vectors/" in f"/{rel}":
            key = "vectors"
        elif file.name.startswith("index-"):
            key = "snapshot"
        elif file.name.startswith("store.sqlite"):
            key = "store"
        else:
            key = "other"
        parts[key] = parts.get(key, 0.0) + file.stat().st_blocks * 512 / 2**20
    for store in path.rglob("store.sqlite"):
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        fts = sum(size for name, size in rows if name.startswith("keywords"))
        parts["store_keyword_index"] = parts.get("store_keyword_index", 0.0) + fts / 2**20
    parts["total"] = sum(v for k, v in parts.items() if k != "store_keyword_index")
    return {k: round(v, 1) for k, v in parts.items()}


def keyword_share(n: int, queries: int, work: Path) -> None:
    """The split of a text collection's disk with a keyword index, on the peers corpus."""
    from peers_corpus import doc_id, texts_and_metadata

    from engine import Engine

    corpus = build(work / f"corpus-{n}", n, queries)
    home = work / "keyword"
    shutil.rmtree(home, ignore_errors=True)
    vectors = corpus.row_range(0, n)
    texts, metas = texts_and_metadata(corpus, np.arange(n))
    col = Engine(home).create("kw", encoder="precomputed", index="flat",
                              options={"dim": vectors.shape[1]}, keyword=True)
    col.add(texts=texts, vectors=vectors, ids=[doc_id(r) for r in range(n)], metadata=metas)
    col.close()
    print(json.dumps({"n": n, "load": os.getloadavg()[0], "parts": breakdown(home)}))
    shutil.rmtree(home, ignore_errors=True)


_OPEN = """
import json, sys, time
import numpy as np
from engine import Engine
q = np.load(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
col = Engine(sys.argv[1]).open("bench")
col.search(vector=q[0], k=10)
first, cpu = time.perf_counter() - t0, time.process_time() - c0
ms = []
for v in q[1:301]:
    t = time.perf_counter()
    col.search(vector=v, k=10)
    ms.append((time.perf_counter() - t) * 1000)
print(json.dumps({"first_answer_s": first, "cpu_s": cpu, "p50_ms": float(np.median(ms))}))
"""


def _interleaved_p50(homes: dict[str, Path], queries: np.ndarray) -> dict[str, float]:
    """Query p50 of both collections open in this process, one query each in turn (x5)."""
    import time

    from engine import Engine

    cols = {label: Engine(home).open("bench") for label, home in homes.items()}
    ms: dict[str, list[float]] = {label: [] for label in cols}
    for _ in range(5):
        for q in queries:
            for label, col in cols.items():
                t = time.perf_counter()
                col.search(vector=q, k=10)
                ms[label].append((time.perf_counter() - t) * 1000)
    return {label: round(float(np.median(v)), 3) for label, v in ms.items()}


def _save_times(home: Path, work: Path, reps: int = 3) -> dict[str, float]:
    """What a commit's snapshot costs in each format: the index written and fsynced."""
    import time

    from engine import Engine

    index = Engine(home).open("bench").view.load_index()
    ways = {"graph only": index.save_sharing_vectors, "vectors inside": index.save}
    times: dict[str, list[float]] = {label: [] for label in ways}
    for _ in range(reps):
        for label, save in ways.items():
            tmp = work / "snapshot.tmp"
            t = time.perf_counter()
            save(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            times[label].append(time.perf_counter() - t)
            tmp.unlink()
    return {label: round(statistics.median(v), 3) for label, v in times.items()}


def formats_ab(home: Path, reps: int, work: Path) -> None:
    """Open + first answer and query p50 of one collection with both snapshot formats."""
    from engine import Engine
    from engine.manifest import file_crc32

    old = work / "old-format"
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(home, old)
    col = Engine(old).open("bench")
    path = col.folder / f"index-{col.manifest.snapshot_generation}.faiss"
    col.view.load_index().save(path)  # what every version before issue 16 wrote
    manifest = json.loads((col.folder / "manifest.json").read_text())
    manifest["snapshot_crc32"] = file_crc32(path)
    (col.folder / "manifest.json").write_text(json.dumps(manifest))
    queries = work / "queries.npy"
    ids = np.random.default_rng(0).choice(col.view.load_index().ids(), 301)
    np.save(queries, col.view.vectors.get(ids) + np.float32(0.01))
    col.close()
    homes = {"graph only": home, "vectors inside": old}
    sizes = {k: round(next(h.rglob("index-*.faiss")).stat().st_size / 2**20, 1)
             for k, h in homes.items()}
    runs: dict[str, list] = {k: [] for k in homes}
    for _ in range(reps):
        for label, h in homes.items():
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, "-c", _OPEN, str(h), str(queries)],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            runs[label].append({**json.loads(done.stdout.splitlines()[-1]), "load": load})
            print(label, runs[label][-1], flush=True)
    measures = ("first_answer_s", "cpu_s", "p50_ms")
    med = {k: {m: statistics.median(x[m] for x in v) for m in measures} for k, v in runs.items()}
    ratio = {m: round(med["graph only"][m] / med["vectors inside"][m], 3) for m in measures}
    interleaved = _interleaved_p50(homes, np.load(queries))
    print(json.dumps({"snapshot_mb": sizes, "median": med, "graph_only_over_vectors_inside":
                      ratio, "interleaved_p50_ms": interleaved, "save_s": _save_times(home, work),
                      "loads": [x["load"] for v in runs.values() for x in v]}))
    shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="source tree of the version to compare with")
    ap.add_argument("--formats", default=None, help="HOME: compare the two snapshot formats")
    ap.add_argument("--keyword-share", action="store_true",
                    help="only measure the keyword index's share of a text collection")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ingests", type=int, default=2)
    ap.add_argument("--opens", type=int, default=7)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    opts = ap.parse_args()
    if opts.formats:
        return formats_ab(Path(opts.formats), opts.opens, Path(opts.work or tempfile.mkdtemp()))
    if opts.keyword_share:
        return keyword_share(opts.n, opts.queries, Path(opts.work or tempfile.mkdtemp()))
    if not opts.before:
        ap.error("--before is required")
    trees = {"before": Path(opts.before).resolve(), "after": HERE.parent}
    work = Path(opts.work or tempfile.mkdtemp(prefix="hubsearch-disk-"))
    corpus = build(work / f"corpus-{opts.n}", opts.n, opts.queries).folder
    runs: dict[str, dict[str, list]] = {t: {} for t in trees}

    def record(tree: str, name: str, out: dict) -> None:
        runs[tree].setdefault(name, []).append(out)
        print(f"{tree:<6} {name:<6} {json.dumps(out, default=str)[:300]}", flush=True)

    print(f"# load at start {os.getloadavg()}", flush=True)
    def turns(i: int) -> list[tuple[str, Path]]:
        """ABBA: the tree that goes first alternates, so a load that rises or falls over the
        run does not always favour the same one."""
        order = list(trees.items())
        return order[::-1] if i % 2 else order

    for i in range(opts.ingests):
        for tree, root in turns(i):
            path = work / tree
            shutil.rmtree(path, ignore_errors=True)
            out = phase(root, "ingest", opts.n, path, corpus, opts.queries)
            record(tree, "ingest", {**out, "parts": breakdown(path)})
    for i in range(opts.opens):
        for tree, root in turns(i):
            record(tree, "open", phase(root, "open", opts.n, work / tree, corpus, opts.queries))
    for i in range(2):
        for tree, root in turns(i):
            record(tree, "query", phase(root, "query", opts.n, work / tree, corpus, opts.queries))
    summary = {}
    for tree, r in runs.items():
        med = statistics.median
        summary[tree] = {
            "disk": r["ingest"][-1]["parts"],
            "ingest_docs_per_s": med(x["docs_per_s"] for x in r["ingest"]),
            "open_s": med(x["open_s"] for x in r["open"]),
            "first_answer_s": med(x["first_query_s"] for x in r["open"]),
            "query_p50_ms": med(x["plain"]["p50_ms"] for x in r["query"]),
            "filtered_p50_ms": med(x["filtered"]["p50_ms"] for x in r["query"]),
            "recall": r["query"][-1]["plain"]["recall"],
            "loads": [x["load"] for v in r.values() for x in v],
        }
    b, a = summary["before"], summary["after"]
    ratios = {k: round(a[k] / b[k], 3) for k in ("ingest_docs_per_s", "open_s", "first_answer_s",
                                                 "query_p50_ms", "filtered_p50_ms")}
    ratios["disk_total"] = round(a["disk"]["total"] / b["disk"]["total"], 3)
    report = {"n": opts.n, "summary": summary, "after_over_before": ratios,
              "load_end": os.getloadavg(), "runs": runs}
    print(json.dumps({k: report[k] for k in ("summary", "after_over_before", "load_end")},
                     indent=1))
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1, default=str))
    shutil.rmtree(work / "before", ignore_errors=True)
    shutil.rmtree(work / "after", ignore_errors=True)


if __name__ == "__main__":
    main()
