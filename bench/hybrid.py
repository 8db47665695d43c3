"""Keyword and hybrid search: quality on real known-item data, and speed at 100,000 documents.

    python bench/hybrid.py quality   # manual pages (MRR@10, recall@10) and BANKING77 (kNN@1)
    python bench/hybrid.py speed [flat|hnsw]  # 100,000 passages: p50, ingest slowdown, disk

Quality. Corpus: Debian's manual pages (bench/hybrid_corpus.py): each page's NAME summary is
the query, the rest of the page its document; 10,000 pages, every summary that names exactly one
page asked. Vectors come from the bundled `use-multilingual` encoder, cached in bench/out/
(encoding takes minutes on the shared machine). The queries are split in two halves by a fixed
seed: fusion and alpha are chosen on the first ("dev"), the figures reported on the second
("test"), so the default is not tuned on what it is judged by. Each side is searched once per
query through the public API (depth 50, as the engine's hybrid search fetches) and the fusions
are applied with the engine's own `engine.hybrid.fuse`; a sample of queries is also run through
the engine's hybrid path end to end and must give the same top 10.

BANKING77 (../shared/data/banking77): kNN@1 of the 3,080 test texts against the 10,003
training texts, as in bench/peers_banking.py, by vector and by the default hybrid search.

Speed. 100,000 passages of manual pages (300 characters each) with random unit vectors
(encoding is not what is measured): ingest through ``add(texts=..., vectors=...)`` with and
without the keyword index, the keyword index's disk, and single-query p50 of keyword, vector
and hybrid search (query vectors precomputed, so encoding is not timed either).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# bench/engine.py would shadow the engine package: the repository first, bench/ last.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.append(str(HERE))

from hybrid_corpus import build, halves, metrics, passages, timed  # noqa: E402

from engine import Engine  # noqa: E402
from engine import hybrid as H  # noqa: E402

OUT = HERE / "out"
BANKING = HERE.parents[1] / "shared" / "data" / "banking77"
DEPTH = H.depth(10)
ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def encoded(name: str, texts: list[str]) -> np.ndarray:
    """use-multilingual vectors of ``texts``, cached in bench/out/<name>.npy."""
    path = OUT / f"{name}.use-m.npy"
    if path.exists():
        vecs = np.load(path)
        if len(vecs) == len(texts):
            return vecs
    enc = Engine(tempfile.mkdtemp()).build_encoder("use-multilingual")
    vecs = np.concatenate(
        [enc.encode(texts[s : s + 500], "text") for s in range(0, len(texts), 500)]
    )
    np.save(path, vecs)
    return vecs


def load_avg() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def sides(col, queries: list[str], qvecs: np.ndarray, where=None):
    """Per query: the vector side's and the keyword side's candidates (ids as ints)."""
    vec = col.search_many(vectors=qvecs, k=DEPTH, where=where)
    out = []
    for text, hits in zip(queries, vec, strict=True):
        kw = col.search(text, mode="keyword", k=DEPTH, where=where)
        out.append(
            (
                (np.array([int(h.id) for h in hits]), np.array([h.similarity for h in hits])),
                (np.array([int(h.id) for h in kw]), np.array([h.keyword_score for h in kw])),
            )
        )
    return out


def ranked(side) -> list[int]:
    return side[0].tolist()


def fused(pairs, fusion: str, alpha: float, k: int = 10) -> list[list[int]]:
    return [H.fuse(v, kw, k, alpha, fusion).ids.tolist() for v, kw in pairs]


def quality() -> None:
    rows, asked, qtexts, qvecs, home, col = manpages()
    t0 = time.perf_counter()
    pairs = sides(col, qtexts, qvecs)
    side_s = time.perf_counter() - t0
    dev, test = halves(len(asked))

    def score(idx, rankings):
        return metrics([rankings[i] for i in idx], [asked[i] for i in idx])

    configs = [(f, a) for f in H.FUSIONS for a in ALPHAS]
    table = {c: fused(pairs, *c) for c in configs}
    print(
        f"manual pages: {len(rows):,} documents, {len(asked):,} queries "
        f"(dev {len(dev):,} / test {len(test):,}); both sides searched in {side_s:.0f} s; "
        f"{load_avg()}"
    )
    print("dev MRR@10 by fusion and alpha (vector weight):")
    print("  fusion    " + "".join(f"{a:>7}" for a in ALPHAS))
    for f in H.FUSIONS:
        print(f"  {f:<9} " + "".join(f"{score(dev, table[(f, a)])[0]:7.1f}" for a in ALPHAS))
    best = max(configs, key=lambda c: score(dev, table[c])[0])
    print(
        f"best on dev: fusion={best[0]} alpha={best[1]}; "
        f"engine default: fusion={H.DEFAULT_FUSION} alpha={H.DEFAULT_ALPHA}"
    )
    default = (H.DEFAULT_FUSION, H.DEFAULT_ALPHA)
    kw_only = [ranked(kw) for _, kw in pairs]
    vec_only = [ranked(v) for v, _ in pairs]
    lines = [("keyword", kw_only), ("vector", vec_only)]
    lines += [(f"hybrid {f} a={H.DEFAULT_ALPHA}", table[(f, H.DEFAULT_ALPHA)]) for f in H.FUSIONS]
    lines += [(f"hybrid {best[0]} a={best[1]} (best on dev)", table[best])]
    print("test half:                          MRR@10  recall@10")
    results = {}
    for name, rankings in lines:
        mrr, rec = score(test, rankings)
        results[name] = (mrr, rec)
        print(f"  {name:<32} {mrr:7.1f}  {rec:8.1f}")
    d_mrr = score(test, table[default])[0]
    single = max(results["keyword"][0], results["vector"][0])
    print(f"default hybrid - better single side: {d_mrr - single:+.1f} MRR@10 points (goal >= +2)")
    check_engine_path(col, qtexts, qvecs, table[default])
    sample = timed(test)
    lat = latencies(col, [qtexts[i] for i in sample], qvecs[sample])
    print(f"query p50 over {len(sample)} test queries, k=10 ({load_avg()}): {p50s(lat)}")
    col.close()
    shutil.rmtree(home, ignore_errors=True)
    validation = banking()
    # The default's rule, on data no reported figure comes from: the best manual-page dev
    # MRR@10 among the settings within 0.5 point of vector kNN@1 on BANKING77's validation.
    allowed = [c for c in configs if validation[c] >= -0.5]
    rule = max(allowed, key=lambda c: score(dev, table[c])[0])
    print(
        f"chosen on the validation data: fusion={rule[0]} alpha={rule[1]} (dev MRR@10 "
        f"{score(dev, table[rule])[0]:.1f}, BANKING77 validation {validation[rule]:+.1f}); "
        f"engine default: fusion={H.DEFAULT_FUSION} alpha={H.DEFAULT_ALPHA}"
    )


def manpages():
    """The corpus, the positions of its asked pages, their queries and query vectors, and a
    `flat` collection of its documents (in a temporary home) with a keyword index."""
    rows = build(OUT / "manpages.jsonl")
    asked = [i for i, r in enumerate(rows) if r["ask"]]
    qtexts = [rows[i]["query"] for i in asked]
    dvecs = encoded("manpages-docs", [r["doc"] for r in rows])
    qvecs = encoded("manpages-queries", qtexts)
    home = Path(tempfile.mkdtemp())
    col = Engine(home).create(
        "man", encoder="precomputed", index="flat", options={"dim": 512}, keyword=True
    )
    col.add(texts=[r["doc"] for r in rows], vectors=dvecs, ids=[str(i) for i in range(len(rows))])
    return rows, asked, qtexts, qvecs, home, col


def latency_only() -> None:
    _, asked, qtexts, qvecs, home, col = manpages()
    sample = timed(halves(len(asked))[1])
    lat = latencies(col, [qtexts[i] for i in sample], qvecs[sample])
    print(f"query p50 over {len(sample)} test queries, k=10 ({load_avg()}): {p50s(lat)}")
    col.close()
    shutil.rmtree(home, ignore_errors=True)


def check_engine_path(col, qtexts, qvecs, expected, n: int = 200) -> None:
    """The engine's own hybrid search gives the top 10 computed here (a fixed sample)."""
    from engine import hybrid_search

    sample = random.Random(1).sample(range(len(qtexts)), n)
    texts = [qtexts[i] for i in sample]
    found, docs = hybrid_search.run(
        col.view,
        col.planner,
        col.store,
        texts,
        qvecs[sample],
        10,
        None,
        H.DEFAULT_ALPHA,
        H.DEFAULT_FUSION,
    )
    same = sum(
        [int(docs[r[0]].id) for r in f.rows] == expected[i][:10]
        for f, i in zip(found, sample, strict=True)
    )
    print(f"engine hybrid path = offline fusion on {same}/{n} sampled queries")


def banking() -> dict[tuple[str, float], float]:
    """BANKING77 kNN@1, hybrid minus vector by fusion and alpha: first on a validation split of
    the training set (a fixed fifth of it asked against the rest), where the default alpha is
    chosen, then on the test split, which is only reported. Returns the validation's
    differences by (fusion, alpha)."""

    def load(name):
        with open(BANKING / f"{name}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["category"] for r in rows]

    texts, intents = load("train")
    tests, truth = load("test")
    dvecs, qvecs = encoded("banking77-train", texts), encoded("banking77-test", tests)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    held, kept = sorted(order[: len(order) // 5]), sorted(order[len(order) // 5 :])
    runs = [
        (
            "validation (train split)",
            kept,
            [texts[i] for i in held],
            dvecs[held],
            [intents[i] for i in held],
        ),
        ("test", list(range(len(texts))), tests, qvecs, truth),
    ]
    validation: dict[tuple[str, float], float] = {}
    for name, index_rows, queries, query_vecs, want in runs:
        home = Path(tempfile.mkdtemp())
        col = Engine(home).create(
            "b77", encoder="precomputed", index="flat", options={"dim": 512}, keyword=True
        )
        col.add(
            texts=[texts[i] for i in index_rows],
            vectors=dvecs[index_rows],
            ids=[str(i) for i in index_rows],
        )
        pairs = sides(col, queries, query_vecs)

        def knn1(rankings, want=want):
            return 100 * float(
                np.mean(
                    [bool(r) and intents[r[0]] == y for r, y in zip(rankings, want, strict=True)]
                )
            )

        vec = knn1([ranked(v) for v, _ in pairs])
        kw = knn1([ranked(k) for _, k in pairs])
        print(
            f"BANKING77 {name}: kNN@1 of {len(queries):,} questions against {len(index_rows):,} "
            f"({load_avg()}): vector {vec:.1f}, keyword {kw:.1f}"
        )
        print(
            "  hybrid kNN@1 minus vector kNN@1 by fusion and alpha (goal >= -0.5 for the default):"
        )
        print("  fusion    " + "".join(f"{a:>7}" for a in ALPHAS))
        for f in H.FUSIONS:
            diffs = [knn1(fused(pairs, f, a, 1)) - vec for a in ALPHAS]
            print(f"  {f:<9} " + "".join(f"{d:+7.1f}" for d in diffs))
            if index_rows is kept:
                validation.update({(f, a): d for a, d in zip(ALPHAS, diffs, strict=True)})
        col.close()
        shutil.rmtree(home, ignore_errors=True)
    return validation


def speed(n: int = 100_000, queries: int = 300, index: str = "flat") -> None:
    texts = passages(n)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(texts), 512)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [str(i) for i in range(len(texts))]
    rows = build(OUT / "manpages.jsonl")
    qtexts = [r["query"] for r in rows if r["ask"]][:queries]
    qvecs = rng.standard_normal((len(qtexts), 512)).astype(np.float32)
    print(
        f"speed: {len(texts):,} passages of 300 chars, random 512-d vectors, {index}; {load_avg()}"
    )
    wall: dict[bool, list[float]] = {}
    cpu: dict[bool, list[float]] = {}
    # Ingest compared on `flat` (alternated: the machine's load drifts); another index kind
    # is built once, for its latencies.
    for keyword in (False, True, False, True) if index == "flat" else (True,):
        home = Path(tempfile.mkdtemp())
        col = Engine(home).create(
            "s", encoder="precomputed", index=index, options={"dim": 512}, keyword=keyword
        )
        t0, c0 = time.perf_counter(), time.process_time()
        col.add(texts=texts, vectors=vecs, ids=ids)
        wall.setdefault(keyword, []).append(time.perf_counter() - t0)
        cpu.setdefault(keyword, []).append(time.process_time() - c0)
        if keyword:
            stats = col.store.keyword_stats()
            store_mb = (home / "s" / "store.sqlite").stat().st_size / 2**20
            lat = latencies(col, qtexts, qvecs)
        col.close()
        shutil.rmtree(home, ignore_errors=True)
    for name, took in (("wall", wall), ("CPU", cpu)) if False in wall else ():
        off, on = min(took[False]), min(took[True])
        print(
            f"ingest add(texts, vectors), {name} time: without keyword index {off:.1f} s "
            f"({len(texts) / off:,.0f} docs/s), with {on:.1f} s ({len(texts) / on:,.0f} docs/s): "
            f"{100 * (on / off - 1):+.0f} % (goal <= +25 %); best of 2 each"
        )
    print(
        f"keyword index: {stats['rows']:,} rows, {stats['bytes'] / 2**20:.1f} MiB "
        f"(store file {store_mb:.1f} MiB in all)"
    )
    for mode, values in lat.items():
        print(
            f"  {mode:<8} p50 {statistics.median(values['wall']):6.2f} ms   "
            f"p90 {np.percentile(values['wall'], 90):6.2f} ms   "
            f"CPU p50 {statistics.median(values['cpu']):6.2f} ms"
        )
    print(f"goals: hybrid p50 <= 10 ms, keyword p50 <= 5 ms; {load_avg()}")


def latencies(col, qtexts, qvecs) -> dict[str, dict[str, list[float]]]:
    """Per mode, each query's wall and CPU milliseconds. The CPU time of this process (all its
    threads) is what the search costs; on the shared machine the wall time adds the waits for
    a core, several times the search's own time when its load is far above its 2 cores."""
    from engine import hybrid_search

    def hybrid(text, q):
        hybrid_search.run(
            col.view,
            col.planner,
            col.store,
            [text],
            q[None, :],
            10,
            None,
            H.DEFAULT_ALPHA,
            H.DEFAULT_FUSION,
        )

    modes = {
        "keyword": lambda text, q: col.search(text, mode="keyword", k=10),
        "vector": lambda text, q: col.search(vector=q, k=10),
        "hybrid": hybrid,
    }
    out = {m: {"wall": [], "cpu": []} for m in modes}
    for text, q in zip(qtexts, qvecs, strict=True):
        for mode, run in modes.items():
            t, c = time.perf_counter(), time.process_time()
            run(text, q)
            out[mode]["wall"].append(1000 * (time.perf_counter() - t))
            out[mode]["cpu"].append(1000 * (time.process_time() - c))
    return out


def p50s(lat: dict[str, dict[str, list[float]]]) -> str:
    return ", ".join(
        f"{m} {statistics.median(v['wall']):.2f} ms (CPU {statistics.median(v['cpu']):.2f})"
        for m, v in lat.items()
    )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "quality"
    if what == "latency":  # the manual pages' query p50 alone, as in `quality`
        latency_only()
        sys.exit()
    if what == "speed":  # python bench/hybrid.py speed [flat|hnsw|...]
        speed(index=sys.argv[2] if len(sys.argv) > 2 else "flat")
    else:
        {"quality": quality, "banking": banking}[what]()
