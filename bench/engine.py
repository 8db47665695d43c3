"""The engine's own cost, measured with the fake hashing encoder (no model in the figures).

    python bench/engine.py [--n 100000] [--dim 512] [--queries 300]

Phases each run in a fresh process: ingest (docs/s until the last add returned, i.e. committed;
peak RSS), cold open (open + first search) on the state the adds left, an explicit
`checkpoint()` (optional for users; timed on its own), cold open again from the snapshot, and
search latency p50/p99 unfiltered and with a 5 % metadata filter. Prints a table with the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# This file is bench/engine.py: drop its folder from the path so `engine` means the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

WORDS = [
    "card",
    "pin",
    "transfer",
    "refund",
    "fee",
    "account",
    "balance",
    "limit",
    "top",
    "up",
    "exchange",
    "rate",
    "cash",
    "atm",
    "verify",
    "identity",
    "password",
    "phone",
    "lost",
    "stolen",
    "declined",
    "pending",
    "charge",
    "salary",
]


def make_docs(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), size=(n, 8))
    texts = [" ".join(WORDS[j] for j in row) + f" case {i}" for i, row in enumerate(picks)]
    metadata = [
        {"category": int(c), "lang": ["en", "de", "fr", "es", "it"][int(la)]}
        for c, la in zip(rng.integers(0, 20, n), rng.integers(0, 5, n), strict=True)
    ]
    return texts, metadata


def phase_ingest(home: str, n: int, dim: int, batch: int) -> dict:
    from engine import Engine

    texts, metadata = make_docs(n)
    eng = Engine(home)
    col = eng.create("bench", encoder="fake-hash", index="flat", options={"dim": dim})
    started = time.perf_counter()
    for s in range(0, n, batch):
        col.add(
            texts=texts[s : s + batch],
            ids=[f"doc-{i}" for i in range(s, s + batch)],
            metadata=metadata[s : s + batch],
        )
    seconds = time.perf_counter() - started  # every add returned: all of it is committed
    label = "ingest" if batch >= n else f"ingest_{batch // 1000}k_calls"
    return {
        f"{label}_docs_s": n / seconds,
        f"{label}_s": seconds,
        f"{label}_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def phase_cold_open(home: str) -> dict:
    """Open + first search on the state `hubsearch add` leaves (no checkpoint: a replay)."""
    from engine import Engine

    started = time.perf_counter()
    Engine(home).open("bench").search("card pin", k=10)
    return {"cold_open_after_add_s": time.perf_counter() - started}


def phase_checkpoint(home: str) -> dict:
    from engine import Engine

    col = Engine(home).open("bench")
    started = time.perf_counter()
    col.checkpoint()
    return {"checkpoint_s": time.perf_counter() - started}


def phase_encoder_only(n: int, dim: int) -> dict:
    from hubsearch_fake import HashEncoder

    texts, _ = make_docs(n)
    enc = HashEncoder(dim=dim)
    started = time.perf_counter()
    for s in range(0, n, 1024):
        enc.encode(texts[s : s + 1024], "text")
    return {"encoder_docs_s": n / (time.perf_counter() - started)}


def phase_search(home: str, queries: int) -> dict:
    from engine import Engine

    texts, _ = make_docs(queries, seed=1)
    started = time.perf_counter()
    col = Engine(home).open("bench")
    col.search(texts[0], k=10)
    cold = time.perf_counter() - started
    out = {"cold_open_s": cold}
    plans = (
        ("unfiltered", None, False),
        ("filter_5pct", {"category": 3}, False),  # a repeated filter (tenant, language)
        ("filter_5pct_uncached", {"category": 3}, True),  # as if every filter were new
    )
    for label, where, cold_filter in plans:
        lat = []
        for t in texts:
            if cold_filter:
                col.planner.clear_cache()
            t0 = time.perf_counter()
            hits = col.search(t, k=10, where=where)
            lat.append(time.perf_counter() - t0)
            assert len(hits) == 10
        out[f"{label}_p50_ms"] = float(np.percentile(lat, 50) * 1000)
        out[f"{label}_p99_ms"] = float(np.percentile(lat, 99) * 1000)
    out["search_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_phase(*args: str) -> dict:
    env = dict(os.environ)
    from fakeplugin.install import install

    site = install(Path(tempfile.mkdtemp()) / "site")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__, "--phase", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--phase", nargs="*")
    args = ap.parse_args()
    if args.phase:
        name, *rest = args.phase
        result = {
            "ingest": lambda: phase_ingest(rest[0], int(rest[1]), int(rest[2]), int(rest[3])),
            "encoder": lambda: phase_encoder_only(int(rest[0]), int(rest[1])),
            "search": lambda: phase_search(rest[0], int(rest[1])),
            "cold": lambda: phase_cold_open(rest[0]),
            "checkpoint": lambda: phase_checkpoint(rest[0]),
        }[name]()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as scratch:
        # The same documents added in calls of 10,000 (an application adding as it goes).
        res = run_phase("ingest", scratch, str(args.n), str(args.dim), "10000")
    with tempfile.TemporaryDirectory() as home:
        # One call, as `hubsearch add NAME file.jsonl` does; the collection searched below.
        res.update(run_phase("ingest", home, str(args.n), str(args.dim), str(args.n)))
        res.update(run_phase("encoder", str(args.n), str(args.dim)))
        res.update(run_phase("cold", home))
        res.update(run_phase("checkpoint", home))  # then the open below reads a snapshot
        res.update(run_phase("search", home, str(args.queries)))
        res["disk_mb"] = sum(p.stat().st_size for p in Path(home).rglob("*") if p.is_file()) / 2**20
    goals = {
        "ingest_docs_s": (">=", 20_000),
        "ingest_10k_calls_docs_s": (">=", 20_000),
        "unfiltered_p50_ms": ("<", 20),
        "filter_5pct_p50_ms": ("<", 5),
        "cold_open_s": ("<", 0.5),
        "cold_open_after_add_s": ("<", 0.5),
    }
    print(
        f"hubsearch engine bench: {args.n:,} docs, dim {args.dim}, fake-hash encoder, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'metric':<22} {'value':>12}  goal")
    for key, value in res.items():
        goal = goals.get(key)
        mark = ""
        if goal:
            ok = value >= goal[1] if goal[0] == ">=" else value < goal[1]
            mark = f"{goal[0]} {goal[1]}  {'met' if ok else 'MISSED'}"
        print(f"{key:<22} {value:>12,.3f}  {mark}")


if __name__ == "__main__":
    main()
