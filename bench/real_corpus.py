"""Real multilingual sentence embeddings for the index and peer benchmarks.

    python bench/real_corpus.py --work /work/scratch-peers/real [--n 180000] [--queries 2000]

Sentences: the manual pages (English and their translations: packages manpages-de, -fr, -es,
-pl, -ja, -it, -pt-br, -ru, -nl, -zh, -tr) and the gettext catalogues under /usr/share/locale, in
the 16 languages of `use-multilingual` (see bench/text_sources.py). Prose only (25-300
characters, half that for Chinese, Japanese and Thai; mostly letters), distinct by case-folded
text. Each language gets the same quota (languages with fewer sentences give all of theirs) so
that no language dominates, drawn with a fixed seed; ``--queries`` sentences are then held out as
queries: they are real sentences that are not in the collection.

Written under ``--work`` (cached: a rerun with the same arguments reads it back):

* ``sentences.jsonl``: one ``{"text", "lang", "source"}`` per stored sentence, row order;
* ``queries.jsonl``: the held-out sentences, same fields;
* ``vectors.npy`` / ``queries.npy``: float32 ``[n, 512]`` from the engine's `use-multilingual`
  (bundled, float32), L2-normalised;
* ``READY`` once everything is there.

Encoding goes in parts of ``--part`` sentences saved as they finish, so a killed run resumes.
Install the pages first: ``apt-get install manpages manpages-dev manpages-de manpages-fr ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
# Run as a script, bench/ comes first on sys.path: keep it (text_sources lives there) but after
# the repository root, so that `engine` and `indexes` mean the packages.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [
    str(BENCH)
]

SEED = 20261204
ENCODER = "use-multilingual"


def pool() -> dict[str, list[dict[str, str]]]:
    """Every distinct prose sentence of the sources, by language (first source seen wins)."""
    from text_sources import gettext_sentences, is_prose, man_sentences

    seen: set[str] = set()
    by_lang: dict[str, list[dict[str, str]]] = defaultdict(list)
    for source in (man_sentences(), gettext_sentences()):
        for lang, text, where in source:
            key = text.casefold()
            if key in seen or not is_prose(text, lang, 25, 300):
                continue
            seen.add(key)
            by_lang[lang].append({"text": text, "lang": lang, "source": where})
    return by_lang


def quota(sizes: list[int], total: int) -> int:
    """The largest per-language cap whose capped sizes sum to at most ``total``."""
    low, high = 0, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(s, mid) for s in sizes) <= total:
            low = mid
        else:
            high = mid - 1
    return low


def select(n: int, queries: int, seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(stored rows, held-out query rows), deterministic for the installed pages and catalogues."""
    by_lang = pool()
    need = n + queries
    available = sum(len(v) for v in by_lang.values())
    if available < need:
        raise SystemExit(f"only {available:,} sentences found, fewer than {need:,}")
    cap = quota([len(v) for v in by_lang.values()], need)
    rng = random.Random(seed)
    chosen = []
    for lang in sorted(by_lang):
        rows = sorted(by_lang[lang], key=lambda r: hashlib.sha1(r["text"].encode()).digest())
        rng.shuffle(rows)
        chosen += rows[:cap]
    rng.shuffle(chosen)
    # Fill the few left by rounding down from what no language gave yet, in a fixed order.
    if len(chosen) < need:
        taken = {r["text"] for r in chosen}
        rest = sorted(
            (r for v in by_lang.values() for r in v if r["text"] not in taken),
            key=lambda r: hashlib.sha1(r["text"].encode()).digest(),
        )
        chosen += rest[: need - len(chosen)]
    return chosen[queries:need], chosen[:queries]


def encode(texts: list[str], out: Path, part: int, batch: int) -> np.ndarray:
    """Vectors of ``texts`` saved to ``out``, encoded in saved parts (resumable), with a bar."""
    from tqdm import tqdm

    from engine.registry import ENCODERS, Registry

    if out.exists():
        return np.load(out)
    parts = out.parent / f"{out.stem}.parts"
    parts.mkdir(exist_ok=True)
    encoder = Registry().load(ENCODERS, ENCODER)(batch_size=batch)
    done = []
    with tqdm(total=len(texts), desc=out.stem, unit="sent", smoothing=0.05) as bar:
        for i, start in enumerate(range(0, len(texts), part)):
            path = parts / f"{i:05d}-{part}.npy"
            if not path.exists():
                vectors = encoder.encode(texts[start : start + part], "text")
                np.save(path.with_suffix(".tmp.npy"), vectors)
                os.replace(path.with_suffix(".tmp.npy"), path)
            done.append(path)
            bar.update(min(part, len(texts) - start))
    vectors = np.concatenate([np.load(p) for p in done]).astype(np.float32)
    np.save(out.with_suffix(".tmp.npy"), vectors)
    os.replace(out.with_suffix(".tmp.npy"), out)
    for p in done:
        p.unlink()
    parts.rmdir()
    return vectors


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, path)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class RealSet:
    """A built --work folder: vectors, query vectors and the rows' language (for filters)."""

    def __init__(self, work: Path) -> None:
        work = Path(work)
        if not (work / "READY").exists():
            raise SystemExit(f"{work} has no READY: run bench/real_corpus.py --work {work}")
        self.work = work
        self.vectors = np.load(work / "vectors.npy", mmap_mode="r")
        self.queries = np.load(work / "queries.npy")
        self.rows = read_rows(work / "sentences.jsonl")
        self.query_rows = read_rows(work / "queries.jsonl")

    def langs(self) -> np.ndarray:
        return np.array([r["lang"] for r in self.rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--n", type=int, default=180_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--part", type=int, default=4096, help="sentences per saved part")
    parser.add_argument("--batch", type=int, default=256, help="encoder batch size")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    spec = {"n": args.n, "queries": args.queries, "seed": args.seed, "encoder": ENCODER}
    spec_file = args.work / "spec.json"
    if spec_file.exists() and json.loads(spec_file.read_text()) != spec:
        raise SystemExit(f"{args.work} holds another set ({spec_file.read_text()}): use another")
    if not (args.work / "sentences.jsonl").exists():
        stored, held = select(args.n, args.queries, args.seed)
        write_rows(args.work / "queries.jsonl", held)
        write_rows(args.work / "sentences.jsonl", stored)
        spec_file.write_text(json.dumps(spec))
    stored = read_rows(args.work / "sentences.jsonl")
    held = read_rows(args.work / "queries.jsonl")
    counts: dict[str, int] = defaultdict(int)
    for r in stored:
        counts[r["lang"]] += 1
    print(f"{len(stored):,} sentences, {len(held):,} queries;", dict(sorted(counts.items())))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    encode([r["text"] for r in held], args.work / "queries.npy", args.part, args.batch)
    encode([r["text"] for r in stored], args.work / "vectors.npy", args.part, args.batch)
    (args.work / "READY").write_text(json.dumps(spec) + "\n")
    print("ready:", args.work)


if __name__ == "__main__":
    main()
