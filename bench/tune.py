"""`tune` stage 1 on BANKING77: frozen vs tuned kNN@1, 10-shot, abstention, time, seed spread.

Protocol (as tests/test_use_multilingual_banking77.py and bench/peers_banking.py): the
collection holds the training utterances with their intent; kNN@1 is the share of test
utterances whose top hit has the right intent. Tuning sees the train split only. The vectors of
the real `use-multilingual` encoder are computed once and cached (--cache); collections are
`precomputed` ones fed those vectors, and test queries go in as base-space ``vectors=``, which
a tuned collection sends through its head exactly as it does an encoded text.

- full: all 10,003 training utterances, seeds 0-4 (mean, range, spread, tune wall time: reading
  the vectors, training, validation and the commit);
- 10-shot: the first 10 training utterances of each intent;
- abstention: the last 10 intents of categories.json are held out entirely (no training
  utterance); with ``min_score="auto"``, the known intents' test utterances should be answered
  rightly, the unknown ones not at all;
- stage2 (``--only stage2 [--seed N]``): `tune --full` on a real use-multilingual collection,
  test utterances searched as texts; with bench/data/banking77_crosslingual.jsonl also the
  translated check set before and after.

    python bench/tune.py [--seeds 5] [--cache DIR] [--json] [--only stage2 --seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# bench/engine.py would shadow the engine package when run as `python bench/tune.py`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def load_split(name: str) -> tuple[list[str], list[str]]:
    with open(DATA / f"{name}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def vectors(cache: Path) -> dict[str, Any]:
    """Train/test vectors of the real encoder, encoded once per machine."""
    path = cache / "banking77-use-multilingual.npz"
    train, train_y = load_split("train")
    test, test_y = load_split("test")
    if not path.exists():
        from engine import Engine

        enc = Engine(tempfile.mkdtemp()).build_encoder("use-multilingual")
        t0 = time.perf_counter()
        data = {"train": enc.encode(train, "text"), "test": enc.encode(test, "text")}
        print(f"encoded {len(train) + len(test)} texts in {time.perf_counter() - t0:.1f} s")
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    with np.load(path) as data:
        return {
            "train": data["train"],
            "test": data["test"],
            "train_y": np.asarray(train_y),
            "test_y": np.asarray(test_y),
        }


def collection(home: Path, name: str, vecs: np.ndarray, labels: np.ndarray) -> Any:
    from engine import Engine

    col = Engine(home).create(
        name, encoder="precomputed", index="flat", options={"dim": vecs.shape[1]}
    )
    col.add(
        vectors=vecs,
        ids=[str(i) for i in range(len(vecs))],
        metadata=[{"intent": str(y)} for y in labels],
    )
    return col


def knn1(col: Any, queries: np.ndarray, labels: np.ndarray) -> float:
    hits = col.search_many(vectors=queries, k=1)
    return float(np.mean([h[0].metadata["intent"] == y for h, y in zip(hits, labels, strict=True)]))


def full(data: dict[str, Any], home: Path, seeds: int) -> dict[str, Any]:
    col = collection(home, "full", data["train"], data["train_y"])
    frozen = knn1(col, data["test"], data["test_y"])
    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        report = col.tune(label_field="intent", seed=seed)
        seconds = time.perf_counter() - t0
        runs.append(
            {
                "seed": seed,
                "knn@1": knn1(col, data["test"], data["test_y"]),
                "seconds": seconds,
                "epochs": report.epochs,
                "best_epoch": report.best_epoch,
                "committed": report.committed,
                "val_before": report.before["knn@1"],
                "val_after": report.after["knn@1"],
            }
        )
        print(
            f"  seed {seed}: kNN@1 {runs[-1]['knn@1']:.4f} in {seconds:.1f} s "
            f"(best epoch {report.best_epoch} of {report.epochs})",
            flush=True,
        )
        col.untune()
    scores = [r["knn@1"] for r in runs]
    return {
        "frozen": frozen,
        "runs": runs,
        "mean": float(np.mean(scores)),
        "min": min(scores),
        "max": max(scores),
        "spread": max(scores) - min(scores),
        "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
    }


def few_shot(data: dict[str, Any], home: Path, shots: int) -> dict[str, Any]:
    seen: dict[str, int] = {}
    rows = []
    for i, y in enumerate(data["train_y"].tolist()):
        if seen.get(y, 0) < shots:
            seen[y] = seen.get(y, 0) + 1
            rows.append(i)
    col = collection(home, f"shot{shots}", data["train"][rows], data["train_y"][rows])
    frozen = knn1(col, data["test"], data["test_y"])
    report = col.tune(label_field="intent", seed=0)
    return {
        "frozen": frozen,
        "tuned": knn1(col, data["test"], data["test_y"]),
        "committed": report.committed,
        "examples": len(rows),
    }


def abstention(data: dict[str, Any], home: Path, held: int = 10) -> dict[str, Any]:
    unknown = set(json.loads((DATA / "categories.json").read_text())[-held:])
    known_train = np.asarray([y not in unknown for y in data["train_y"].tolist()])
    known_test = np.asarray([y not in unknown for y in data["test_y"].tolist()])
    col = collection(home, "abstain", data["train"][known_train], data["train_y"][known_train])
    report = col.tune(label_field="intent", seed=0)
    out: dict[str, Any] = {
        "threshold": col.manifest.tune["threshold"] if report.committed else None,
        "committed": report.committed,
    }
    for name, mask in (("known", known_test), ("unknown", ~known_test)):
        hits = col.search_many(vectors=data["test"][mask], k=1, min_score="auto")
        labels = data["test_y"][mask]
        answered = np.asarray([bool(h) for h in hits])
        right = np.asarray(
            [bool(h) and h[0].metadata["intent"] == y for h, y in zip(hits, labels, strict=True)]
        )
        out[name] = {
            "queries": int(mask.sum()),
            "answered": float(answered.mean()),
            "answered_right": float(right.mean()),
        }
    return out


def stage2(home: Path, seed: int = 0, crosslingual: Path | None = None) -> dict[str, Any]:
    """`tune --full` on a real use-multilingual collection of the 10,003 training utterances.

    Unlike the other parts this one encodes texts (stage 2 changes the encoder): the collection
    is built by ``col.add`` (timed as the reference), tuned with ``full=True`` (timed: the
    frozen pass over every document, both stages' training and the commit), and the test
    utterances are searched as texts, as users search.
    """
    from engine import Engine

    train, train_y = load_split("train")
    test, test_y = load_split("test")
    col = Engine(home).create("stage2", encoder="use-multilingual", index="flat")
    t0 = time.perf_counter()
    col.add(
        texts=train,
        ids=[str(i) for i in range(len(train))],
        metadata=[{"intent": y} for y in train_y],
    )
    add_seconds = time.perf_counter() - t0

    def knn(texts: list[str], labels: list[str]) -> float:
        hits = col.search_many(texts, k=1, mode="vector")
        return float(
            np.mean([h[0].metadata["intent"] == y for h, y in zip(hits, labels, strict=True)])
        )

    checks = read_crosslingual(crosslingual) if crosslingual else {}
    frozen = knn(test, test_y)
    frozen_x = {lang: knn(t, y) for lang, (t, y) in checks.items()}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    report = col.tune(label_field="intent", seed=seed, full=True, progress=True)
    seconds = time.perf_counter() - t0
    out = {
        "frozen": frozen,
        "tuned": knn(test, test_y),
        "committed": report.committed,
        "val_before": report.before["knn@1"],
        "val_stage1": report.stage1["knn@1"],
        "val_after": report.after["knn@1"],
        "stage2_epochs": [r for r in report.history if r.get("stage") == 2],
        "seconds": seconds,
        "add_seconds": add_seconds,
        "load_at_start": load,
    }
    if checks:
        out["crosslingual"] = {
            lang: {"frozen": frozen_x[lang], "tuned": knn(t, y)} for lang, (t, y) in checks.items()
        }
    return out


def read_crosslingual(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{language: (queries, intents)} from the JSONL check set (one object per query)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            texts, labels = out.setdefault(rec["lang"], ([], []))
            texts.append(rec["text"])
            labels.append(rec["intent"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hubsearch-bench",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["full", "10-shot", "abstention", "stage2"], default=None)
    parser.add_argument("--seed", type=int, default=0, help="With --only stage2.")
    parser.add_argument(
        "--crosslingual",
        type=Path,
        default=Path(__file__).resolve().parent / "data" / "banking77_crosslingual.jsonl",
        help="With --only stage2: translated test queries (lang, text, intent) checked too.",
    )
    args = parser.parse_args()
    if args.only == "stage2":
        with tempfile.TemporaryDirectory() as tmp:
            xl = args.crosslingual if args.crosslingual.exists() else None
            result = stage2(Path(tmp), args.seed, xl)
        result["load_after"] = os.getloadavg()[0]
        print(json.dumps(result, indent=2))
        return
    data = vectors(args.cache)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        parts = {
            "full": lambda: full(data, home, args.seeds),
            "10-shot": lambda: few_shot(data, home, 10),
            "abstention": lambda: abstention(data, home),
        }
        result: dict[str, Any] = {}
        for name, run in parts.items():
            if args.only in (None, name):
                print(f"{name}:", flush=True)
                result[name] = run()
    result["load_before"] = load
    result["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if args.only is not None:
        print(json.dumps(result, indent=2))
        return
    f, s, a = result["full"], result["10-shot"], result["abstention"]
    print(f"| frozen kNN@1 | {100 * f['frozen']:.2f} |")
    print(
        f"| stage 1 kNN@1, {args.seeds} seeds: mean (min - max) | {100 * f['mean']:.2f} "
        f"({100 * f['min']:.2f} - {100 * f['max']:.2f}), spread {100 * f['spread']:.2f} |"
    )
    print(f"| stage 1 wall time, 10,003 examples, incl. commit | {f['seconds_mean']:.1f} s |")
    print(f"| 10-shot kNN@1 frozen / tuned | {100 * s['frozen']:.2f} / {100 * s['tuned']:.2f} |")
    print(
        f"| abstention: known answered right / unknown not answered | "
        f"{100 * a['known']['answered_right']:.1f} % / "
        f"{100 * (1 - a['unknown']['answered']):.1f} % (threshold {a['threshold']}) |"
    )
    print(f"| load average before / after | {load:.1f} / {result['load_after']:.1f} |")


if __name__ == "__main__":
    main()
