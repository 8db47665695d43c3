"""In-process add vs. encoding on a local Ray cluster (1 and 2 actors), on real sentences.

    python bench/ray_ingest.py [--n 100000] [--encoder use-multilingual] [--actors 1 2]

Texts: the BANKING77 questions (../shared/data/banking77, ~13,000) followed by distinct
sentences of the text under /usr/share/doc (Debian's package READMEs, NEWS and changelogs),
short ones (20-200 characters), in a fixed order. They are written to one Parquet file with ids,
which both paths read: in process as `hubsearch add kb.parquet` does (checking pass, then adds of
20,000), on Ray as `hubsearch add kb.parquet --ray` does.

Not counted: the model load in process (a warm-up encode), the cluster start-up and each run's
actor start-up (actor creation, model load, first batch: `first_batch`), printed apart. Counted
for Ray: the checking pass + everything after the first encoded batch came back. The distributed
overhead is that time over the in-process time, minus one (goal: < 30 % at one actor).

Also measured: the driver's commit throughput with precomputed vectors (`add_encoded` of
20,000-row chunks at the encoder's width), the rate past which one writer is the limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
sys.path.append(str(REPO / "bench"))  # last: bench/engine.py must not shadow the package

BANKING = REPO.parent / "shared" / "data" / "banking77"


def corpus(n: int) -> list[str]:
    import csv

    from text_sources import doc_sentences

    texts: list[str] = []
    for split in ("train.csv", "test.csv"):
        with (BANKING / split).open() as f:
            texts.extend(r["text"].strip() for r in csv.DictReader(f))
    seen = set(texts)
    texts = list(dict.fromkeys(texts))
    if len(texts) < n:
        texts.extend(s for s in doc_sentences() if s not in seen)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} sentences found, fewer than --n {n}")
    return texts[:n]


def write_parquet(texts: list[str], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"s{i}" for i in range(len(texts))], "text": texts})
    pq.write_table(table, path, row_group_size=10_000)
    return path


def in_process(engine, encoder: str, options: dict, path: Path) -> tuple[float, int]:
    from engine.ingest import Fields, iter_rows
    from engine.streamed import add_streamed

    col = engine.create("inproc", encoder=encoder, index="flat", options=options)
    col.encoder.encode(["warm up the model"], "text")  # model load: not counted
    started = time.perf_counter()
    report = add_streamed(col, lambda: iter_rows(path, Fields(id="id")))
    return time.perf_counter() - started, report.added


def on_ray(engine, encoder: str, options: dict, path: Path, actors: int) -> dict:
    col = engine.create(f"ray{actors}", encoder=encoder, index="flat", options=options)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report = col.add_dataset(path, id="id", actors=actors, timings=timings)
    wall = time.perf_counter() - started
    counted = timings["check"] + timings["encode"] - timings["first_batch"]
    return {**timings, "wall": wall, "counted": counted, "added": report.added}


def commit_rate(engine, dim: int, n: int) -> float:
    """Docs/s the driver commits with vectors already made (what one writer can absorb)."""
    from engine.collection import COMMIT_EVERY

    col = engine.create("writer", encoder="precomputed", index="flat", options={"dim": dim})
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, n, COMMIT_EVERY):
        size = min(COMMIT_EVERY, n - start)
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"w{start + i}" for i in range(size)]
        texts = [f"document {start + i} of the writer benchmark" for i in range(size)]
        col.add_encoded(texts, vectors, ids, None, col.encoder.fingerprint)
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--encoder", default="use-multilingual")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    options: dict = {}
    if args.encoder.startswith("fake"):
        from fakeplugin.install import install

        site = install(Path(tempfile.mkdtemp(prefix="fake-site-")))
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
        options = {"dim": 512}
    import ray

    from engine import Engine

    texts = corpus(args.n)
    work = Path(tempfile.mkdtemp(prefix="ray-ingest-"))
    path = write_parquet(texts, work / "sentences.parquet")
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts):,} texts ({words:.1f} words on average), encoder {args.encoder}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")

    engine = Engine(work / "home")
    inproc, added = in_process(engine, args.encoder, options, path)
    assert added == len(texts)
    dim = engine.open("inproc").dim

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cluster = time.perf_counter() - started
    runs = {a: on_ray(engine, args.encoder, options, path, a) for a in args.actors}
    ray.shutdown()
    writer = commit_rate(engine, dim, min(args.n, 100_000))

    print(f"cluster start-up (not counted): {cluster:.1f} s")
    print()
    print("| path | counted s | docs/s | vs in-process | check pass s | actor start-up s |")
    print("|---|---|---|---|---|---|")
    n = len(texts)
    print(f"| in process | {inproc:.1f} | {n / inproc:,.0f} | 1.00x | (in counted) | - |")
    for a, r in runs.items():
        assert r["added"] == n, r
        over = r["counted"] / inproc - 1
        print(
            f"| Ray, {a} actor{'s' if a > 1 else ''} | {r['counted']:.1f} | "
            f"{n / r['counted']:,.0f} | {1 + over:.2f}x ({over:+.0%}) | {r['check']:.1f} | "
            f"{r['first_batch']:.1f} |"
        )
    print()
    print(f"driver commit throughput, precomputed {dim}-d vectors: {writer:,.0f} docs/s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
