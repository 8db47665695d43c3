"""Images per second for the bundled EfficientNet-Lite0, decoding included, and query latency.

    python bench/encode_image.py [--images 256] [--batch 32] [--workers N] [--json]

Writes JPEGs of about 640 x 480 (crops and mirror images of the photos that ship with
scikit-image and scikit-learn) into a temporary folder, then measures:

- end to end: files on disk -> ``engine.images.iter_images`` (thread pool, prefetch) ->
  ``encoder.encode`` at the batch size, the road ``hubsearch add`` takes;
- decode only and model only, to show which of the two is the bottleneck;
- a single-image query: decode one file + encode it, p50 and p90 over 50 queries.

On a shared machine wall-clock rates understate the code; the CPU milliseconds per image
(all threads) barely depend on contention, and ``cores * 1000 / cpu_ms`` is what the same
work yields on an idle machine with perfect scaling across cores (an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from photos import real_photos  # noqa: E402

from engine.images import as_rgb_array, decode_min_side, iter_images  # noqa: E402


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of about 640 x 480: random crops of the real photos, some mirrored."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = list(real_photos().values())
    paths = []
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = max(640 / photo.width, 480 / photo.height) * rng.uniform(1.0, 1.4)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
        left = int(rng.integers(0, photo.width - 640 + 1))
        top = int(rng.integers(0, photo.height - 480 + 1))
        image = photo.crop((left, top, left + 640, top + 480))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i:04d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def end_to_end(encoder, paths: list[Path], batch: int, workers: int | None) -> tuple[float, float]:
    """Images per second, and CPU milliseconds (all threads) per image."""
    started, cpu = time.perf_counter(), time.process_time()
    pending: list[np.ndarray] = []
    done = 0
    for result in iter_images(paths, min_side=decode_min_side(encoder), workers=workers):
        pending.append(result.array)
        if len(pending) == batch:
            done += len(encoder.encode(pending, "image"))
            pending = []
    if pending:
        done += len(encoder.encode(pending, "image"))
    return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done


def decode_only(encoder, paths: list[Path], workers: int | None) -> tuple[float, list]:
    started = time.perf_counter()
    arrays = [r.array for r in iter_images(paths, min_side=decode_min_side(encoder),
                                           workers=workers)]
    return len(arrays) / (time.perf_counter() - started), arrays


def model_only(encoder, arrays: list[np.ndarray], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        encoder.encode(arrays[start : start + batch], "image")
    return len(arrays) / (time.perf_counter() - started)


def query_latency(encoder, paths: list[Path], count: int = 50) -> list[float]:
    times = []
    for path in paths[:count]:
        started = time.perf_counter()
        encoder.encode([as_rgb_array(path, str(path), min_side=decode_min_side(encoder))],
                       "image")
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    from plugins.efficientnet import EfficientNetEncoder

    encoder = EfficientNetEncoder(batch_size=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        encoder.encode([as_rgb_array(p, "warm-up") for p in paths[: args.batch]], "image")
        encoder.encode([as_rgb_array(paths[0], "warm-up")], "image")
        e2e, cpu_ms = end_to_end(encoder, paths, args.batch, args.workers)
        decode, arrays = decode_only(encoder, paths, args.workers)
        model = model_only(encoder, arrays, args.batch)
        latency = query_latency(encoder, paths)
    gpus = tf.config.list_physical_devices("GPU")
    rows = {
        "device": f"{len(gpus)} GPU" if gpus else f"CPU, {os.cpu_count()} cores",
        "images": args.images,
        "batch": args.batch,
        "end_to_end_images_per_s": round(e2e, 1),
        "end_to_end_cpu_ms_per_image": round(cpu_ms, 1),
        # What the CPU time allows when the machine is not shared (perfect core scaling).
        "idle_machine_estimate_images_per_s": round((os.cpu_count() or 1) * 1000 / cpu_ms, 1),
        "decode_only_images_per_s": round(decode, 1),
        "model_only_images_per_s": round(model, 1),
        "query_p50_ms": round(statistics.median(latency), 1),
        "query_p90_ms": round(float(np.percentile(latency, 90)), 1),
        "bottleneck": "model" if model < decode else "decoding",
    }
    if args.json:
        print(json.dumps(rows))
        return
    width = max(map(len, rows))
    print(f"{'measure':<{width}}  value")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
