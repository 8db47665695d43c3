"""Contrastive training of the heads (stage 1) and of the top image blocks (stage 2).

The loss is CLIP's symmetric InfoNCE: in a batch of N pairs, each caption must pick its image
among the N and each image its caption, with similarities multiplied by a learnable scale.
Pairs of the same group (equal captions, by default) are all correct answers for each other, so
a batch with two "red circle on the left" captions does not punish the model for confusing
them. Stage 1 reads cached grid features and trains only the heads; stage 2 (optional) reads
the cached trunk output and also trains the top blocks of EfficientNet with a small learning
rate. Each epoch ends with recall@1 on the validation split; the best weights are kept and
training stops once ``patience`` epochs brought nothing better.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.heads import EarlyStopping, info_nce
from plugins.clip_towers.heads import Heads
from plugins.clip_towers.metrics import both_ways

__all__ = ["FitConfig", "FitResult", "Split", "Trainer", "info_nce", "use_mixed_precision"]

EVAL_BATCH = 512


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    fine_tune_epochs: int = 0
    batch_size: int = 128
    learning_rate: float = 1e-3
    #: Stage 2 moves pretrained convolutions: ten times gentler than the heads' first stage.
    fine_tune_learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 3
    seed: int = 0
    #: None: mixed float16 only when TensorFlow sees a GPU (on a CPU it is slower, not faster).
    mixed_precision: bool | None = None


@dataclass
class Split:
    """Cached features of one split, row i being pair i."""

    grid: np.ndarray  # float16 [n, GRID, GRID, C]
    trunk: np.ndarray | None  # float16 [n, h, w, c], needed only for stage 2
    text: np.ndarray  # float32 [n, 512]
    groups: np.ndarray  # int64 [n]
    images: np.ndarray  # int64 [n]: which image (pairs may share one)

    def __len__(self) -> int:
        return len(self.groups)


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    mixed_precision: bool = False


class Trainer:
    """Runs both stages over the splits, logging to TensorBoard and a progress bar."""

    def __init__(self, heads: Heads, top: Any, config: FitConfig, *, logdir: Path | None = None,
                 progress: bool = True, mixed_precision: bool = False) -> None:
        import tensorflow as tf

        self.heads, self.top, self.config = heads, top, config
        self.progress = progress
        self.writer = tf.summary.create_file_writer(str(logdir)) if logdir else None
        self.result = FitResult(mixed_precision=mixed_precision)
        self.rng = np.random.default_rng(config.seed)
        self._epoch = 0
        # One tracker across both stages: stage 2 keeps stage 1's weights unless it beats them.
        self._best = EarlyStopping(config.patience, self._snapshot)

    # -- the two stages ---------------------------------------------------------------------

    def fit(self, train: Split, val: Split | None) -> FitResult:
        from plugins.clip_towers.backbones import grid_pool

        config = self.config
        heads = self.heads

        def from_grid(x: Any, training: bool) -> Any:
            return heads.image(x, training=training)

        self._stage("heads", config.epochs, config.learning_rate, heads.variables,
                    from_grid, train, val, "grid")
        if config.fine_tune_epochs > 0:
            if train.trunk is None:
                raise ValueError("stage 2 needs the cached trunk features")
            self.top.trainable = True

            def from_trunk(x: Any, training: bool) -> Any:
                return heads.image(grid_pool(self.top(x, training=training)), training=training)

            variables = [*self.top.trainable_variables, *heads.variables]
            self._stage("fine-tune", config.fine_tune_epochs, config.fine_tune_learning_rate,
                        variables, from_trunk, train, val, "trunk")
            self.top.trainable = False
        if self.writer is not None:
            self.writer.flush()
        return self.result

    def _stage(self, name: str, epochs: int, lr: float, variables: list[Any],
               encode_image: Callable[[Any, bool], Any], train: Split, val: Split | None,
               image_field: str) -> None:
        import keras
        from tqdm.auto import tqdm

        optimizer = keras.optimizers.AdamW(lr, weight_decay=self.config.weight_decay)
        optimizer.exclude_from_weight_decay(var_list=[self.heads.log_scale])
        if self.result.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        step = self._step_function(optimizer, variables, encode_image)
        embed = self._embed_function(encode_image)
        images = getattr(train, image_field)
        size = min(self.config.batch_size, len(train))
        steps = len(train) // size
        bar = tqdm(total=epochs * steps, desc=f"towers {name}", unit="batch",
                   disable=not self.progress, leave=True, dynamic_ncols=True)
        self._best.stale = 0
        try:
            for _ in range(epochs):
                start = time.perf_counter()
                order = self.rng.permutation(len(train))
                losses = []
                for s in range(steps):
                    rows = np.sort(order[s * size : (s + 1) * size])
                    batch = images[rows].astype(np.float32)  # float16 on disk and in memory
                    loss = step(batch, train.text[rows], train.groups[rows])
                    losses.append(float(loss))
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                record: dict[str, Any] = {"stage": name, "epoch": self._epoch + 1,
                                          "loss": float(np.mean(losses)),
                                          "temperature": float(1 / self.heads.scale())}
                stop = False
                if val is not None and len(val):
                    recall = self._validate(embed, val, getattr(val, image_field))
                    record["val_recall@1"] = recall
                    score = (recall["text_to_image"] + recall["image_to_text"]) / 2
                    bar.set_postfix(loss=f"{record['loss']:.3f}", r1=f"{score:.3f}")
                    before = self._best.best_epoch
                    stop = self._best.update(score, self._epoch)
                    if self._best.best_epoch != before:
                        self.result.best = dict(record)
                record["seconds"] = time.perf_counter() - start
                self.result.history.append(record)
                self._log(record)
                self._epoch += 1
                if stop:
                    record["stopped_early"] = True
                    break
        finally:
            bar.close()
        if not self._best.restore_best(self._restore) and self.result.history:
            self.result.best = dict(self.result.history[-1])

    # -- pieces -------------------------------------------------------------------------------

    def _step_function(self, optimizer: Any, variables: list[Any],
                       encode_image: Callable[[Any, bool], Any]) -> Callable[..., Any]:
        import tensorflow as tf

        heads = self.heads

        @tf.function(reduce_retracing=True)
        def step(images: Any, texts: Any, groups: Any) -> Any:
            with tf.GradientTape() as tape:
                a = tf.math.l2_normalize(encode_image(images, True), axis=1)
                b = tf.math.l2_normalize(heads.text(texts, training=True), axis=1)
                loss = info_nce(a, b, groups, heads.scale())
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            optimizer.apply(grads, variables)
            return loss

        return step

    def _embed_function(self, encode_image: Callable[[Any, bool], Any]) -> Callable[..., Any]:
        import tensorflow as tf

        heads = self.heads

        @tf.function(reduce_retracing=True)
        def embed(images: Any, texts: Any) -> Any:
            a = tf.math.l2_normalize(encode_image(images, False), axis=1)
            return a, tf.math.l2_normalize(heads.text(texts, training=False), axis=1)

        return embed

    def _validate(self, embed: Callable[..., Any], val: Split,
                  images: np.ndarray) -> dict[str, float]:
        parts = [embed(images[i : i + EVAL_BATCH].astype(np.float32), val.text[i : i + EVAL_BATCH])
                 for i in range(0, len(val), EVAL_BATCH)]
        image_vecs = np.concatenate([p[0].numpy() for p in parts])
        text_vecs = np.concatenate([p[1].numpy() for p in parts])
        first, image_groups = image_candidates(val.images, val.groups)
        recall = both_ways(text_vecs, image_vecs[first], val.groups, image_groups, ks=(1,))
        return {way: r[1] for way, r in recall.items()}

    def _snapshot(self) -> list[Any]:
        return [self.heads.snapshot(), self.top.get_weights()]

    def _restore(self, weights: list[Any]) -> None:
        self.heads.restore(weights[0])
        self.top.set_weights(weights[1])

    def _log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        scalars = {"train/loss": record["loss"], "train/temperature": record["temperature"]}
        for way, value in record.get("val_recall@1", {}).items():
            scalars[f"val/recall@1_{way}"] = value
        with self.writer.as_default(step=record["epoch"]):
            for tag, value in scalars.items():
                write_scalar(tag, value)


def image_candidates(images: np.ndarray, groups: np.ndarray) -> tuple[list[int], list[frozenset]]:
    """First row of each distinct image, and the groups of all its pairs."""
    first: dict[int, int] = {}
    members: dict[int, set[int]] = {}
    for row, (image, group) in enumerate(zip(images.tolist(), groups.tolist(), strict=True)):
        first.setdefault(image, row)
        members.setdefault(image, set()).add(group)
    return list(first.values()), [frozenset(members[i]) for i in first]


def write_scalar(tag: str, value: float) -> None:
    """``tf.summary.scalar`` without the tensorboard package: the same event, tagged for
    TensorBoard's scalars plugin, written through TensorFlow's own summary op."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=metadata)


def use_mixed_precision(requested: bool | None) -> bool:
    if requested is not None:
        return requested
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
