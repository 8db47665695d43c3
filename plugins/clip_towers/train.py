"""One training run, from ``PAIRS.jsonl`` to a towers folder.

read pairs -> backbone features (cached; bad images skipped and reported) -> split by image ->
stage 1 (heads) -> stage 2 (top image blocks, optional) -> export. The towers folder is written
under a temporary name next to ``out`` and renamed at the end, so ``out`` appears complete or
not at all; TensorBoard logs go to ``out/logs`` unless ``logdir`` says otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BadInput
from plugins.clip_towers.pairs import Skipped, read_pairs, require_enough
from plugins.clip_towers.spec import ImageInput, TowersSpec

DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 256
    image_size: int = DEFAULT_IMAGE_SIZE
    val_fraction: float = 0.1
    image_field: str = "image"
    text_field: str = "text"
    group_field: str | None = None
    cache_dir: Path | None = None
    logdir: Path | None = None
    progress: bool = True


@dataclass
class TrainReport:
    out: Path
    pairs: int
    used: int
    skipped: list[Skipped]
    images_computed: int
    images_cached: int
    train_pairs: int
    val_pairs: int
    feature_seconds: float
    epoch_seconds: float  # mean over stage-1 epochs: heads on cached features only
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    mixed_precision: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def train_towers(
    pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig = TrainConfig(),
    fit_config: Any = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> TrainReport:
    """Train towers on ``pairs_file`` and write them to ``out`` (absent or empty)."""
    from plugins.clip_towers.backbones import ImageBackbone, TextBackbone
    from plugins.clip_towers.cache import FeatureCache, default_cache_dir
    from plugins.clip_towers.features import extract_images, text_features
    from plugins.clip_towers.fit import FitConfig, Trainer, use_mixed_precision
    from plugins.clip_towers.heads import build_heads, float32_copy

    fit_config = fit_config or FitConfig()
    target = Path(out)
    _check_settings(target, config, fit_config)
    pairs = read_pairs(pairs_file, config.image_field, config.text_field, config.group_field)
    require_enough(len(pairs), 0, pairs_file)

    started = time.perf_counter()
    image = ImageBackbone(config.image_size)
    cache_root = config.cache_dir or default_cache_dir()
    image_cache = FeatureCache(cache_root, "lite0", image.fingerprint())
    from tqdm.auto import tqdm

    with tqdm(total=len({p.image for p in pairs}), desc="backbone features", unit="image",
              disable=not config.progress, dynamic_ncols=True) as bar:
        extracted = extract_images(pairs, image, image_cache, on_progress=bar.update)
    for skipped in extracted.skipped:
        if on_skip:
            on_skip(skipped)
    require_enough(len(extracted.pairs), len(extracted.skipped), pairs_file)
    text = TextBackbone()
    text_cache = FeatureCache(cache_root, "use-m3", text.fingerprint())
    captions = text_features([p.text for p in extracted.pairs], text, text_cache)
    grid = image_cache.load(extracted.image_keys, "grid")
    trunk = image_cache.load(extracted.image_keys, "trunk") if fit_config.fine_tune_epochs else None
    feature_seconds = time.perf_counter() - started

    groups = _ids([p.group for p in extracted.pairs])
    images = _ids(extracted.image_keys)
    train_rows, val_rows = split_by_image(images, config.val_fraction, fit_config.seed)

    def rows(which: np.ndarray) -> Any:
        from plugins.clip_towers.fit import Split

        return Split(grid[which], None if trunk is None else trunk[which], captions[which],
                     groups[which], images[which])

    mixed = use_mixed_precision(fit_config.mixed_precision)
    heads = build_heads(tuple(grid.shape[1:]), text.dim, config.dim, mixed_precision=mixed)
    image.build()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".training",
                                    dir=target.parent))
    try:
        logdir = config.logdir or staging / "logs"
        trainer = Trainer(heads, image.top, fit_config, logdir=logdir, progress=config.progress,
                          mixed_precision=mixed)
        result = trainer.fit(rows(train_rows), rows(val_rows) if len(val_rows) else None)
        stage1 = [r["seconds"] for r in result.history if r["stage"] == "heads"]
        report = TrainReport(
            out=target, pairs=len(pairs), used=len(extracted.pairs), skipped=extracted.skipped,
            images_computed=extracted.computed, images_cached=extracted.cached,
            train_pairs=len(train_rows), val_pairs=len(val_rows),
            feature_seconds=feature_seconds,
            epoch_seconds=float(np.mean(stage1)) if stage1 else 0.0,
            history=result.history, best=result.best, mixed_precision=mixed,
        )
        spec = TowersSpec(
            dim=config.dim,
            image=ImageInput(size=config.image_size),
            backbones={"text": text.fingerprint(), "image": image.fingerprint()},
            training=_training_record(report, config, fit_config),
        )
        from plugins.clip_towers.export import export_towers

        if mixed:  # exported towers compute in float32 wherever they run
            heads = float32_copy(heads)
        export_towers(staging, spec, text=text, image=image, heads=heads)
        if target.exists():
            target.rmdir()  # checked empty above; rename needs it gone
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return report


def split_by_image(images: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices for training and validation; all pairs of one image land on one side."""
    distinct = np.unique(images)
    n_val = round(len(distinct) * fraction)
    if fraction > 0:
        n_val = min(max(n_val, 1), len(distinct) - 1)
    held = np.random.default_rng(seed).permutation(distinct)[:n_val]
    is_val = np.isin(images, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _ids(values: list[str]) -> np.ndarray:
    table: dict[str, int] = {}
    return np.array([table.setdefault(v, len(table)) for v in values], dtype=np.int64)


def _check_settings(target: Path, config: TrainConfig, fit_config: Any) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"--out {str(target)!r} exists and is not empty; pick a new folder")
    if not 0 <= config.val_fraction < 1:
        raise BadInput(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
    for name, value, least in (("--dim", config.dim, 1), ("--epochs", fit_config.epochs, 1),
                               ("--fine-tune-epochs", fit_config.fine_tune_epochs, 0),
                               ("--batch-size", fit_config.batch_size, 2),
                               ("--image-size", config.image_size, 32)):
        if value < least:
            raise BadInput(f"{name} must be at least {least}, got {value}")


def _training_record(report: TrainReport, config: TrainConfig, fit_config: Any) -> dict[str, Any]:
    return {
        "pairs": report.used,
        "train_pairs": report.train_pairs,
        "val_pairs": report.val_pairs,
        "epochs_run": len(report.history),
        "best": report.best,
        "settings": {**asdict(fit_config), "dim": config.dim, "val_fraction": config.val_fraction},
    }
