"""Index kinds on clustered synthetic vectors: speed, recall, size, drift and deletes.

    python bench/indexes.py [--sizes 10000,100000,1000000] [--kinds flat,hnsw,ivfpq]
                            [--experiments main,drift,deletes] [--workdir DIR] [--json FILE]
    python bench/indexes.py --real DIR [--kinds auto,hnsw,ivfpq] [-o recall=0.98] [--json FILE]
    python bench/indexes.py --hard [--kinds auto,hnsw,ivfpq] [-o hnsw:efSearch=256] [--settle 600]

``--real DIR`` (real sentence embeddings of bench/real_corpus.py) and ``--hard`` (300,000 x 512
in 3,000 tight clusters) run the collection-level experiment of bench/index_collections.py
instead: one `precomputed` collection per kind, ``col.search`` latencies and recall@10, and
the index entry of ``hubsearch info --json`` (its recorded recall, if it has one) beside them.
There ``-o KEY=VALUE`` is an index option of every kind and ``-o KIND:KEY=VALUE`` of one.

Vectors come from :func:`indexes.testing.clustered` (512-d, fixed seed) and are written to a
memmap in ``--workdir``, standing in for the engine's vector file: `ivfpq` re-ranks on it
through the lookup. Builds use every core FAISS sees; latencies are one query at a time on one
thread (FAISS and BLAS). The 1M run takes a while (HNSW's graph): ``--sizes 10000`` is quick.

* main: per size and kind, build time, recall@10 against exact search, p50/p99 latency with no
  filter and with a 5 % filter (recall against exact filtered search), bytes per vector on
  disk (the saved snapshot) and in memory (``memory_bytes``), and the kind `auto` picks.
* drift: ``--drift-size`` vectors in ten batches whose cluster centres move; the engine's loop
  (add, ask ``needs_rebuild``, rebuild) against a never-retrained and a freshly trained index.
* deletes: delete 30 % of ``--deletes-size`` vectors; no deleted id may come back; snapshot
  size after the delete and after compaction (rebuild) against a build of the remaining 70 %.
* recall (not in the default list): per size and kind, a collection with ``--recall-target``
  built through the engine; the recall its measurement recorded against the recall of new
  queries, and p50 with the knobs it chose. ``--data hard`` is 3,000 tight clusters.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# This file is bench/indexes.py: drop its folder from the path so `indexes` means the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path[:0] = [str(REPO)]
sys.path.append(str(REPO / "bench"))  # last: for bench/index_collections.py, real_corpus.py

K = 10
SEED = 20240611
PARAMS = {"flat": {}, "hnsw": {}, "ivfpq": {}, "auto": {}}
DRIFT_STEP = 1.0  # latent units each batch's cluster centres move


def data_file(workdir: Path, n: int, dim: int, seed: int, drift_batches: int = 0) -> np.ndarray:
    """The vectors as a read-only memmap, generated once per (n, dim, seed, drift) and kept."""
    from indexes.testing import clustered

    path = workdir / f"vectors-{n}-{dim}-{seed}-{drift_batches}.f32"
    if not path.exists() or path.stat().st_size != n * dim * 4:
        partial = path.with_suffix(".part")
        out = np.memmap(partial, np.float32, "w+", shape=(n, dim))
        per = n // max(drift_batches, 1)
        for b in range(max(drift_batches, 1)):
            stop = n if b == max(drift_batches, 1) - 1 else (b + 1) * per
            clustered(stop - b * per, dim, seed=seed, start=b * per, drift=b * DRIFT_STEP,
                      out=out[b * per : stop])  # fmt: skip
        out.flush()
        del out
        partial.rename(path)
    return np.memmap(path, np.float32, "r", shape=(n, dim))


def exact_top(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, rows=None) -> np.ndarray:
    """Exact top-K ids over ``vectors`` (only ``rows`` of it when given), read in chunks."""
    from indexes._exact import exact_search

    rows = np.arange(len(vectors)) if rows is None else rows
    step = 1 << 16
    parts = (
        (ids[rows[s : s + step]], vectors[rows[s : s + step]]) for s in range(0, len(rows), step)
    )
    return exact_search(queries, K, parts)[1]


def single_thread_ms(index, queries: np.ndarray, allowed=None) -> np.ndarray:
    import faiss
    from threadpoolctl import threadpool_limits

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    try:
        with threadpool_limits(1):
            for q in queries:
                start = time.perf_counter()
                index.search(q[None, :], K, allowed_ids=allowed)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.array(times)


def rss_after_load(kind: str, path: Path, dim: int) -> int:
    """Anonymous memory a fresh process gains by loading the snapshot (what `open` costs)."""
    import subprocess

    options = [f"-o{kind}.{k}={v}" for k, v in PARAMS[kind].items()]
    command = [sys.executable, __file__, "--load-rss", f"{kind}:{dim}:{path}", *options]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def _load_rss(spec: str) -> None:
    from engine.registry import INDEXES, Registry

    kind, dim, path = spec.split(":", 2)
    cls = Registry().load(INDEXES, kind)
    cls(int(dim), **PARAMS[kind])  # imports FAISS before the baseline
    before = anon_rss()
    index = cls.load(Path(path), int(dim), **PARAMS[kind])
    gc.collect()
    print(anon_rss() - before)
    del index


def anon_rss() -> int:
    """Anonymous resident memory (the memmap's pages are file-backed and excluded)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def make(kind: str, dim: int, lookup, **params):
    from engine.registry import INDEXES, Registry

    index = Registry().load(INDEXES, kind)(dim, **{**PARAMS[kind], **params})
    index.attach_vectors(lookup)
    return index


def main_experiment(args, workdir: Path) -> list[dict]:
    from indexes.auto import AutoIndex
    from indexes.testing import ArrayLookup, clustered, recall

    rows = []
    for n in args.sizes:
        vectors = data_file(workdir, n, args.dim, SEED)
        ids = 1000 + 3 * np.arange(n, dtype=np.int64)
        lookup = ArrayLookup(ids, vectors)
        queries = clustered(args.queries, args.dim, seed=SEED, start=10**9)
        mask = np.random.default_rng(n).random(n) < args.filter_share
        allowed = ids[mask]
        truth = exact_top(queries, vectors, ids)
        ftruth = exact_top(queries, vectors, ids, np.flatnonzero(mask))
        picks = {
            "auto": AutoIndex(args.dim).choose(n)[0],
            "auto memory_mb=1024": AutoIndex(args.dim, memory_mb=1024).choose(n)[0],
        }
        for kind in args.kinds:
            gc.collect()
            index = make(kind, args.dim, lookup)
            start = time.perf_counter()
            index.rebuild(ids, vectors)
            build = time.perf_counter() - start
            lat_q = queries[: args.latency_queries if kind != "flat" or n <= 100_000 else 30]
            plain, filtered = (
                single_thread_ms(index, lat_q),
                single_thread_ms(index, lat_q, allowed),
            )
            snapshot = workdir / f"{kind}-{n}.idx"
            index.save(snapshot)
            rss = rss_after_load(kind, snapshot, args.dim)
            row = {
                "n": n, "kind": kind, "build_s": round(build, 1),
                "recall": recall(index.search(queries, K)[1], truth),
                "p50_ms": np.percentile(plain, 50), "p99_ms": np.percentile(plain, 99),
                "filtered_recall": recall(index.search(queries, K, allowed)[1], ftruth),
                "filtered_p50_ms": np.percentile(filtered, 50),
                "filtered_p99_ms": np.percentile(filtered, 99),
                "disk_B_per_vec": snapshot.stat().st_size / n,
                "mem_B_per_vec": index.memory_bytes() / n, "loaded_rss_B_per_vec": rss / n,
                "state": index.state(), **picks,
            }  # fmt: skip
            if not args.keep_snapshots:
                snapshot.unlink()
            rows.append(row)
            print(json.dumps(row, default=float), flush=True)
            del index
    return rows


def drift_experiment(args, workdir: Path) -> dict:
    from indexes.testing import ArrayLookup, clustered, recall

    n, batches, dim = args.drift_size, 10, args.dim
    vectors = data_file(workdir, n, dim, SEED + 1, drift_batches=batches)
    ids = 1000 + 3 * np.arange(n, dtype=np.int64)
    lookup = ArrayLookup(ids, vectors)
    per, commit = n // batches, max(1, n // batches // 10)
    managed, stale = make("ivfpq", dim, lookup), make("ivfpq", dim, lookup)
    stale.rebuild(ids[:per], vectors[:per])  # trained on the first batch, then only appended to
    log = []
    for start in range(0, n, commit):
        stop = min(n, start + commit)
        managed.add(ids[start:stop], vectors[start:stop])
        if start >= per:
            stale.add(ids[start:stop], vectors[start:stop])
        reason = managed.needs_rebuild()
        if reason:
            began = time.perf_counter()
            managed.rebuild(ids[:stop], vectors[:stop])
            log.append(
                {"at": stop, "reason": reason, "seconds": round(time.perf_counter() - began, 1)}
            )
            print(json.dumps(log[-1]), flush=True)
    fresh = make("ivfpq", dim, lookup)
    fresh.rebuild(ids, vectors)
    newest = clustered(
        args.queries, dim, seed=SEED + 1, start=10**9, drift=(batches - 1) * DRIFT_STEP
    )
    spread = np.concatenate(
        [
            clustered(
                args.queries // batches,
                dim,
                seed=SEED + 1,
                start=10**9 + b * 10**6,
                drift=b * DRIFT_STEP,
            )
            for b in range(batches)
        ]
    )
    result = {"n": n, "rebuilds": log, "state": managed.state(), "stale_state": stale.state()}
    for name, queries in (("newest", newest), ("all_batches", spread)):
        truth = exact_top(queries, vectors, ids)
        for label, index in (("managed", managed), ("stale", stale), ("fresh", fresh)):
            result[f"recall_{name}_{label}"] = recall(index.search(queries, K)[1], truth)
    print(json.dumps(result, default=float), flush=True)
    return result


def deletes_experiment(args, workdir: Path) -> list[dict]:
    from indexes.testing import ArrayLookup, clustered, recall

    n, dim = args.deletes_size, args.dim
    vectors = data_file(workdir, n, dim, SEED + 2)
    ids = 1000 + 3 * np.arange(n, dtype=np.int64)
    lookup = ArrayLookup(ids, vectors)
    gone = np.random.default_rng(3).random(n) < 0.3
    keep = np.flatnonzero(~gone)
    queries = np.concatenate(
        [clustered(args.queries, dim, seed=SEED + 2, start=10**9), vectors[gone][:200]]
    )
    truth = exact_top(queries, vectors, ids, keep)
    rows = []
    for kind in ("flat", "hnsw", "ivfpq", "auto"):
        index = make(kind, dim, lookup) if kind != "auto" else make_auto(dim, lookup)
        index.rebuild(ids, vectors)
        index.remove(ids[gone])
        found = np.concatenate([index.search(queries, 100)[1],
                                index.search(queries, 100, allowed_ids=ids[::2])[1]])  # fmt: skip
        snapshot = workdir / "deleted.idx"
        index.save(snapshot)
        after_delete = snapshot.stat().st_size
        reason = index.needs_rebuild()
        index.rebuild(ids[keep], vectors[keep])
        index.save(snapshot)
        compacted = snapshot.stat().st_size
        reference = make(kind, dim, lookup) if kind != "auto" else make_auto(dim, lookup)
        reference.rebuild(ids[keep], vectors[keep])
        reference.save(snapshot)
        row = {
            "kind": kind, "n": n, "deleted": int(gone.sum()),
            "deleted_returned": int(np.isin(found, ids[gone]).sum()),
            "recall_after_delete": recall(found[: len(queries), :K], truth),
            "needs_rebuild": reason, "disk_after_delete": after_delete,
            "disk_after_compaction": compacted, "disk_fresh_70pct": snapshot.stat().st_size,
        }  # fmt: skip
        snapshot.unlink()
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def recall_data(args, workdir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored vectors, new queries) for the recall experiment.

    ``--data clustered``: the main experiment's vectors; ``hard``: ``--clusters`` (3,000)
    tight clusters (spread 0.35 and noise 0.12 in `clustered`'s units against 0.7 and 0.3),
    queries drawn from the same clusters, i.e. near stored points; a ``.npy`` path: real
    vectors, queries from ``--query-data`` (or the file's last ``--queries`` rows).
    """
    from indexes.testing import clustered

    if args.data.endswith(".npy"):
        vectors = np.load(args.data, mmap_mode="r")
        if args.query_data:  # real queries: other sentences, not in the collection
            return np.asarray(vectors[:n], np.float32), np.load(args.query_data)[: args.queries]
        return np.asarray(vectors[:n], np.float32), np.asarray(vectors[-args.queries :], np.float32)
    if args.data == "hard":
        shape = {"clusters": args.clusters, "spread": 0.35, "noise": 0.12}
        path = workdir / f"hard-{n}-{args.dim}-{args.clusters}.f32"
        if not path.exists():
            out = np.memmap(path, np.float32, "w+", shape=(n, args.dim))
            clustered(n, args.dim, seed=SEED, out=out, **shape)
            out.flush()
        data = np.memmap(path, np.float32, "r", shape=(n, args.dim))
        queries = clustered(args.queries, args.dim, seed=SEED, start=10**9, **shape)
        return data, queries
    data = data_file(workdir, n, args.dim, SEED)
    return data, clustered(args.queries, args.dim, seed=SEED, start=10**9)


def recall_experiment(args, workdir: Path) -> list[dict]:
    """Per size and kind: the target, the recall the engine recorded, the recall new queries
    get (exact truth), p50 on one thread, and what the measurement chose and cost."""
    from engine import Engine
    from indexes.testing import recall

    rows = []
    for n in args.sizes:
        data, queries = recall_data(args, workdir, n)
        ids = np.arange(n, dtype=np.int64)
        truth = exact_top(queries, data, ids)
        for kind in args.kinds:
            home = Path(tempfile.mkdtemp(dir=workdir, prefix="recall-home-"))
            options = {**PARAMS.get(kind, {}), "recall": args.recall_target}
            col = Engine(home).create("bench", encoder="precomputed", options={"dim": args.dim},
                                      index=kind, index_options=options)  # fmt: skip
            col.recall.background = False
            started = time.perf_counter()
            for s in range(0, n, 100_000):
                part = np.asarray(data[s : s + 100_000])
                col.add(vectors=part, ids=[str(i) for i in range(s, s + len(part))])
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            measured = col.wait_for_recall() or {"recall": 1.0, "exact": True, "params": {}}
            measure_s = time.perf_counter() - started
            index = col.view.load_index()
            # Engine ids are assigned in add order: row i is internal id i.
            found = index.search(queries, K)[1]
            times = single_thread_ms(index, queries[: args.latency_queries])
            rows.append({
                "n": n, "kind": kind, "active": index.active_kind(), "data": args.data,
                "target": args.recall_target, "recorded": measured["recall"],
                "recorded_filtered": measured.get("filtered", {}),
                "actual": recall(found, truth), "params": measured.get("params", {}),
                "met": measured.get("met", True), "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)), "build_s": build_s,
                "measure_s": measure_s, "sample": measured.get("sample", 0),
            })  # fmt: skip
            print(json.dumps(rows[-1], default=float), flush=True)
            col.close()
            shutil.rmtree(home, ignore_errors=True)
    return rows


def make_auto(dim: int, lookup):
    from indexes.auto import AutoIndex

    index = AutoIndex(dim)
    index.attach_vectors(lookup)
    return index


def markdown(results: dict) -> str:
    """The results as the tables of docs/indexes.md."""
    out = []
    if results.get("main"):
        out += [
            "| vectors | kind | build s | recall@10 | p50 ms | p99 ms | 5 % filter recall@10 "
            "| filter p50 ms | filter p99 ms | disk B/vec | memory B/vec | loaded RSS B/vec "
            "| `auto` picks (no budget / 1 GiB) |",
            "|" + "---|" * 13,
        ]
        for r in results["main"]:
            out.append(
                f"| {r['n']:,} | `{r['kind']}` | {r['build_s']:.1f} | {r['recall']:.3f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['filtered_recall']:.3f} "
                f"| {r['filtered_p50_ms']:.2f} | {r['filtered_p99_ms']:.2f} "
                f"| {r['disk_B_per_vec']:,.0f} | {r['mem_B_per_vec']:,.0f} "
                f"| {r['loaded_rss_B_per_vec']:,.0f} | {r['auto']} / {r['auto memory_mb=1024']} |"
            )
    if results.get("recall"):
        out += [
            "| data | vectors | kind (active) | target | recorded | actual (new queries) "
            "| recorded filtered 50 % / 10 % | chosen | p50 ms | p99 ms | measure s |",
            "|" + "---|" * 11,
        ]
        for r in results["recall"]:
            filt = " / ".join(str(v) for v in r["recorded_filtered"].values()) or "-"
            chosen = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "exact"
            out.append(
                f"| {r['data']} | {r['n']:,} | `{r['kind']}` ({r['active']}) | {r['target']:g} "
                f"| {r['recorded']:.3f} | {r['actual']:.3f} | {filt} | {chosen} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['measure_s']:.1f} |"
            )
    if results.get("deletes"):
        out += [
            "",
            "| kind | deleted | deleted ids returned | recall@10 after | needs_rebuild "
            "| disk after delete | after compaction | fresh 70 % build |",
            "|" + "---|" * 8,
        ]
        for r in results["deletes"]:
            out.append(
                f"| `{r['kind']}` | {r['deleted']:,} of {r['n']:,} | {r['deleted_returned']} "
                f"| {r['recall_after_delete']:.3f} | {r['needs_rebuild'] or '-'} "
                f"| {r['disk_after_delete'] / 2**20:.1f} MiB "
                f"| {r['disk_after_compaction'] / 2**20:.1f} MiB "
                f"| {r['disk_fresh_70pct'] / 2**20:.1f} MiB |"
            )
    if results.get("drift"):
        r = results["drift"]
        out += [
            "",
            "| queries from | managed (add, needs_rebuild, rebuild) | never retrained | fresh |",
            "|---|---|---|---|",
        ]
        for name, label in (("newest", "the last batch"), ("all_batches", "every batch")):
            cells = [f"{r[f'recall_{name}_{who}']:.3f}" for who in ("managed", "stale", "fresh")]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out += ["", "Rebuilds asked for by `needs_rebuild()` during the run:", ""]
        out += [f"* at {b['at']:,}: {b['reason']} ({b['seconds']} s)" for b in r["rebuilds"]]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", help="flat,hnsw,ivfpq; with --real/--hard: auto,hnsw,ivfpq")
    parser.add_argument("--experiments", default="main,drift,deletes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--filter-share", type=float, default=0.05)
    parser.add_argument("--drift-size", type=int, default=1_000_000)
    parser.add_argument("--deletes-size", type=int, default=100_000)
    parser.add_argument("--workdir", help="keeps the generated vectors between runs")
    parser.add_argument("--recall-target", type=float, default=0.95, help="recall experiment")
    parser.add_argument("--data", default="clustered", help="recall: clustered, hard or X.npy")
    parser.add_argument("--clusters", type=int, default=3000, help="recall --data hard")
    parser.add_argument("--query-data", help="recall with --data X.npy: queries (.npy)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--keep-snapshots", action="store_true", help="keep main's index files")
    parser.add_argument("-o", "--option", action="append", default=[], help="kind.name=value")
    parser.add_argument("--load-rss", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a --json file")
    parser.add_argument("--real", metavar="DIR", help="real embeddings (bench/real_corpus.py)")
    parser.add_argument("--hard", action="store_true", help="300,000 in 3,000 tight clusters")
    parser.add_argument("--n", type=int, help="--real/--hard: use this many vectors")
    parser.add_argument(
        "--settle", type=float, default=0.0,
        help="--real/--hard: wait up to this many seconds after ingest for `info` to record "
        "a measured recall (a background self-measurement)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.markdown:
        results = json.loads(Path(args.markdown).read_text())
        if "collections" in results:
            from index_collections import markdown as collections_markdown

            return print(collections_markdown(results["collections"]))
        return print(markdown(results))
    if args.real or args.hard:
        return collections_main(args)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.kinds = (args.kinds or "flat,hnsw,ivfpq").split(",")
    for option in args.option:
        key, _, value = option.partition("=")
        kind, _, name = key.partition(".")
        PARAMS[kind][name] = value
    if args.load_rss:
        return _load_rss(args.load_rss)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = {}
        experiments = args.experiments.split(",")
        if "main" in experiments:
            results["main"] = main_experiment(args, workdir)
        if "deletes" in experiments:
            results["deletes"] = deletes_experiment(args, workdir)
        if "drift" in experiments:
            results["drift"] = drift_experiment(args, workdir)
        if "recall" in experiments:
            results["recall"] = recall_experiment(args, workdir)
    # Counts the memmapped vectors' pages too; the snapshot-loading child adds its own index.
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print(markdown(results))
    print("peak RSS MiB:", results["peak_rss_mib"])


def collections_main(args) -> None:
    from index_collections import collection_experiment
    from index_collections import markdown as collections_markdown

    args.kinds = (args.kinds or "auto,hnsw,ivfpq").split(",")
    if args.queries == 500 and args.hard:
        args.queries = 1000
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        result = collection_experiment(args, workdir)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    if args.json:
        Path(args.json).write_text(json.dumps({"collections": result}, indent=1, default=float))
    print(collections_markdown(result))


if __name__ == "__main__":
    main()
