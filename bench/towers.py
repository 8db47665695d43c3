"""clip-towers: backbone feature extraction, training time per epoch, and tower throughput.

    python bench/towers.py [--pairs 2000] [--image-size 224] [--epochs 5]
                           [--fine-tune-epochs 2] [--held-out 300] [--json]

Renders the generated shapes set (tests/shapes.py) into a temporary folder, then measures:

- feature extraction: images/s through decode + EfficientNet-Lite0 (trunk and grid features)
  into an empty cache, and distinct captions/s through USE-m v3;
- training: seconds per stage-1 epoch on cached features (heads only) and per stage-2 epoch
  (top blocks + heads on the cached trunk output), the first epoch of a stage (which also traces
  the step) excluded when there are more;
- the exported towers through the ``clip-towers`` encoder: texts/s, images/s from decoded
  arrays (model only) and images/s from files on disk (decode included);
- recall@1/5 both ways on ``--held-out`` other pairs captioned in English, German and Japanese
  (the towers were trained on English only), scored by group (docs/clip-towers.md).

CPU milliseconds per item (all threads) are printed next to the wall-clock rates: on a shared
machine they change less than wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import shapes  # noqa: E402

from engine.images import decode_min_side, iter_images  # noqa: E402


class Clock:
    """Wall seconds and CPU seconds (all threads of this process) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rates(self, items: int) -> dict[str, float]:
        return {"per_s": items / self.wall, "cpu_ms_each": self.cpu * 1000 / items}


def extraction(pairs_file: Path, size: int, cache: Path) -> dict[str, dict[str, float]]:
    from plugins.clip_towers.backbones import ImageBackbone, TextBackbone
    from plugins.clip_towers.cache import FeatureCache
    from plugins.clip_towers.features import extract_images, text_features
    from plugins.clip_towers.pairs import read_pairs

    pairs = read_pairs(pairs_file)
    image = ImageBackbone(size)
    image.features(np.zeros((2, size, size, 3), np.uint8))  # build and trace outside the clock
    with Clock() as images:
        extracted = extract_images(pairs, image, FeatureCache(cache, "lite0", image.fingerprint()))
    text = TextBackbone()
    text.features(["warm up"])
    captions = [p.text for p in pairs]
    with Clock() as texts:
        text_features(captions, text, FeatureCache(cache, "use-m3", text.fingerprint()))
    # Captions repeat (72 attribute sets, 5 templates): the cache computes each distinct one once.
    return {"images": images.rates(extracted.computed),
            "captions": texts.rates(len(set(captions)))}


def training(pairs_file: Path, out: Path, size: int, cache: Path, epochs: int,
             fine_tune: int) -> dict[str, float]:
    from plugins.clip_towers.fit import FitConfig
    from plugins.clip_towers.train import TrainConfig, train_towers

    config = TrainConfig(image_size=size, cache_dir=cache, group_field="group", progress=False)
    # patience = epochs: every requested epoch runs, so the timings cover all of them.
    fit = FitConfig(epochs=epochs, fine_tune_epochs=fine_tune, patience=epochs + fine_tune)
    with Clock() as whole:
        report = train_towers(pairs_file, out, config, fit)

    def per_epoch(stage: str) -> float:
        seconds = [r["seconds"] for r in report.history if r["stage"] == stage]
        steady = seconds[1:] or seconds  # the first epoch also traces the step function
        return float(np.mean(steady)) if steady else float("nan")

    return {
        "train_pairs": report.train_pairs,
        "heads_epoch_s": per_epoch("heads"),
        "fine_tune_epoch_s": per_epoch("fine-tune"),
        "whole_run_s": whole.wall,
        "best_val_recall@1": report.best.get("val_recall@1", {}),
    }


def towers(out: Path, pairs_file: Path, items: int) -> dict[str, dict[str, float]]:
    from plugins.clip_towers import ClipTowersEncoder
    from plugins.clip_towers.pairs import read_pairs

    encoder = ClipTowersEncoder(towers=str(out))
    pairs = read_pairs(pairs_file)[:items]
    paths = [p.image for p in pairs]
    texts = [p.text for p in pairs]
    encoder.encode(texts[:8], "text")
    arrays = [r.array for r in iter_images(paths, min_side=decode_min_side(encoder))]
    encoder.encode(arrays[:8], "image")
    with Clock() as text_clock:
        encoder.encode(texts, "text")
    with Clock() as model_clock:
        encoder.encode(arrays, "image")
    with Clock() as file_clock:
        decoded = [r.array for r in iter_images(paths, min_side=decode_min_side(encoder))]
        encoder.encode(decoded, "image")
    return {"texts": text_clock.rates(len(texts)), "images_model": model_clock.rates(len(arrays)),
            "images_from_files": file_clock.rates(len(paths))}


def recall(out: Path, held_out: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Recall@1/5 both ways on held-out pairs, per caption language (towers saw English)."""
    from plugins.clip_towers import ClipTowersEncoder
    from plugins.clip_towers.evaluate import evaluate_towers

    encoder = ClipTowersEncoder(towers=str(out))
    figures = {}
    for language, path in held_out.items():
        report = evaluate_towers(encoder, path, group_field="group")
        figures[language] = {f"{way}@{k}": v for way, r in report.recall.items()
                             for k, v in r.items() if k in (1, 5)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--tower-items", type=int, default=512)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="bench-towers-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        files = shapes.write_set(root, args.pairs, seed=1, name="pairs")
        held_out = shapes.write_set(root, args.held_out, seed=2, name="held-out")
        generated = time.perf_counter() - started
        cache = root / "cache"
        results = {
            "pairs": args.pairs,
            "image_size": args.image_size,
            "cpu_cores": os.cpu_count(),
            "generate_s": generated,
            "extraction": extraction(files["en"], args.image_size, cache),
            "training": training(files["en"], root / "towers", args.image_size, cache,
                                 args.epochs, args.fine_tune_epochs),
            "towers": towers(root / "towers", files["en"], args.tower_items),
            "held_out_recall": recall(root / "towers", held_out),
        }
    if args.json:
        print(json.dumps(results))
        return
    ex, tr, tw = results["extraction"], results["training"], results["towers"]
    print(f"{args.pairs} pairs at {args.image_size} px, {os.cpu_count()} CPU cores "
          f"(generated in {generated:.1f} s)")
    print(f"backbone features   images {ex['images']['per_s']:8.1f}/s "
          f"({ex['images']['cpu_ms_each']:.1f} CPU ms each), captions "
          f"{ex['captions']['per_s']:8.1f}/s ({ex['captions']['cpu_ms_each']:.2f} CPU ms each)")
    print(f"training            heads epoch {tr['heads_epoch_s']:.2f} s, fine-tune epoch "
          f"{tr['fine_tune_epoch_s']:.2f} s ({tr['train_pairs']} pairs); whole run "
          f"{tr['whole_run_s']:.1f} s incl. model loading and export")
    print(f"towers              texts {tw['texts']['per_s']:8.1f}/s, images (model) "
          f"{tw['images_model']['per_s']:8.1f}/s, images (files) "
          f"{tw['images_from_files']['per_s']:8.1f}/s")
    for language, figures in results["held_out_recall"].items():
        print(f"held-out recall {language}  " + ", ".join(f"{k} {v:.3f}"
                                                        for k, v in figures.items()))


if __name__ == "__main__":
    main()
