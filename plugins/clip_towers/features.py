"""Running the frozen backbones once per image and caption, through the cache.

Images are keyed by their file's SHA-256 before anything is decoded, so a rerun finds them
without touching the network; only the misses are decoded (in a thread pool, at the reduced
size the engine also uses) and run. Unreadable images come back as :class:`Skipped` with the
reason, never as an exception: the caller decides whether enough pairs are left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.images import DECODE_OVERSAMPLING, iter_images
from engine.resources import file_sha256
from plugins.clip_towers.backbones import ImageBackbone, TextBackbone
from plugins.clip_towers.cache import SHARD_ROWS, FeatureCache, text_key
from plugins.clip_towers.pairs import Pair, Skipped, require_enough
from plugins.clip_towers.pixels import square_batch

IMAGE_BATCH = 64
TEXT_BATCH = 512
TRUNK, GRID_FEATURES, TEXT = "trunk", "grid", "text"


@dataclass
class Extracted:
    """Which pairs are usable, under which cache keys, and what it cost."""

    pairs: list[Pair] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    computed: int = 0
    cached: int = 0


def extract_images(
    pairs: list[Pair],
    backbone: ImageBackbone,
    cache: FeatureCache,
    on_progress: Callable[[int], None] | None = None,
) -> Extracted:
    """Cache backbone features of every readable image; report the others.

    ``on_progress(n)`` is called as images are settled, ``n`` at a time, adding up to the
    number of distinct image paths.
    """
    result = Extracted()
    keys: dict[Path, str] = {}
    reasons: dict[Path, str] = {}
    for pair in pairs:
        if pair.image in keys or pair.image in reasons:
            continue
        try:
            keys[pair.image] = file_sha256(pair.image)
        except OSError as exc:
            reasons[pair.image] = f"cannot read the image ({exc.strerror or exc})"
    missing = set(cache.missing(list(keys.values())))
    todo = [path for path, key in keys.items() if key in missing]
    result.cached = len(keys) - len(todo)
    if on_progress:
        on_progress(result.cached + len(reasons))  # settled without running the backbone
    if todo:
        reasons.update(_compute(todo, keys, backbone, cache, on_progress))
        result.computed = len(todo) - sum(1 for p in todo if p in reasons)
    for pair in pairs:
        if pair.image in reasons:
            result.skipped.append(Skipped(pair.where, str(pair.image), reasons[pair.image]))
        else:
            result.pairs.append(pair)
            result.image_keys.append(keys[pair.image])
    return result


def _compute(
    paths: list[Path],
    keys: dict[Path, str],
    backbone: ImageBackbone,
    cache: FeatureCache,
    on_progress: Callable[[int], None] | None,
) -> dict[Path, str]:
    """Decode, run and cache ``paths``; returns the reasons of those that failed."""
    size = backbone.size
    failed: dict[Path, str] = {}
    batch: list[tuple[str, np.ndarray]] = []
    pending: dict[str, list[np.ndarray]] = {"keys": [], TRUNK: [], GRID_FEATURES: []}

    def run_batch() -> None:
        trunk, grid = backbone.features(square_batch([a for _, a in batch], size))
        pending["keys"] += [k for k, _ in batch]
        pending[TRUNK] += list(trunk)
        pending[GRID_FEATURES] += list(grid)
        if on_progress:
            on_progress(len(batch))
        batch.clear()

    def flush() -> None:
        if pending["keys"]:
            cache.add(pending["keys"], {TRUNK: np.stack(pending[TRUNK]),
                                        GRID_FEATURES: np.stack(pending[GRID_FEATURES])})
        for rows in pending.values():
            rows.clear()

    for item in iter_images(paths, min_side=size * DECODE_OVERSAMPLING):
        if item.error is not None or item.array is None:
            failed[item.path] = item.error or "not readable"
            if on_progress:
                on_progress(1)
            continue
        batch.append((keys[item.path], item.array))
        if len(batch) == IMAGE_BATCH:
            run_batch()
        if len(pending["keys"]) >= SHARD_ROWS:
            flush()
    if batch:
        run_batch()
    flush()
    return failed


def text_features(texts: list[str], backbone: TextBackbone, cache: FeatureCache) -> np.ndarray:
    """Caption features ``float32 [n, 512]``, computing only captions the cache lacks."""
    keys = [text_key(t) for t in texts]
    todo = cache.missing(keys)
    if todo:
        by_key = dict(zip(keys, texts, strict=True))
        for start in range(0, len(todo), SHARD_ROWS):
            chunk = todo[start : start + SHARD_ROWS]
            vectors = np.concatenate([
                backbone.features([by_key[k] for k in chunk[i : i + TEXT_BATCH]])
                for i in range(0, len(chunk), TEXT_BATCH)
            ])
            cache.add(chunk, {TEXT: vectors.astype(np.float32)})
    return cache.load(keys, TEXT)


@dataclass
class TrainingData:
    """Everything training reads: usable pairs and their cached features, row i = pair i."""

    extracted: Extracted
    image: ImageBackbone
    text: TextBackbone
    grid: np.ndarray  # float16 [n, GRID, GRID, 1280]
    trunk: np.ndarray | None  # float16 [n, h, w, 192]; only when fine-tuning
    captions: np.ndarray  # float32 [n, 512]
    groups: np.ndarray  # int64 [n]
    images: np.ndarray  # int64 [n], equal for pairs sharing an image file
    seconds: float

    def split(self, rows: np.ndarray) -> Any:
        from plugins.clip_towers.fit import Split

        trunk = None if self.trunk is None else self.trunk[rows]
        return Split(self.grid[rows], trunk, self.captions[rows], self.groups[rows],
                     self.images[rows])


def training_data(
    pairs: list[Pair],
    source: str,
    *,
    image_size: int,
    cache_root: Path,
    with_trunk: bool,
    progress: bool,
    on_skip: Callable[[Skipped], None] | None = None,
) -> TrainingData:
    """Extract (or read back) the features of ``pairs``; too few usable pairs is a BadInput."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    image = ImageBackbone(image_size)
    image_cache = FeatureCache(cache_root, "lite0", image.fingerprint())
    with tqdm(total=len({p.image for p in pairs}), desc="backbone features", unit="image",
              disable=not progress, dynamic_ncols=True) as bar:
        extracted = extract_images(pairs, image, image_cache, on_progress=bar.update)
    for skipped in extracted.skipped:
        if on_skip:
            on_skip(skipped)
    require_enough(len(extracted.pairs), len(extracted.skipped), source)
    text = TextBackbone()
    captions = text_features([p.text for p in extracted.pairs], text,
                             FeatureCache(cache_root, "use-m3", text.fingerprint()))
    keys = extracted.image_keys
    return TrainingData(
        extracted, image, text,
        grid=image_cache.load(keys, GRID_FEATURES),
        trunk=image_cache.load(keys, TRUNK) if with_trunk else None,
        captions=captions,
        groups=_ids([p.group for p in extracted.pairs]),
        images=_ids(keys),
        seconds=time.perf_counter() - started,
    )


def _ids(values: list[str]) -> np.ndarray:
    table: dict[str, int] = {}
    return np.array([table.setdefault(v, len(table)) for v in values], dtype=np.int64)
