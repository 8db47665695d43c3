"""Stage 1: train the head on frozen vectors, with the engine's shared head-training pieces.

Label mode contrasts a batch of documents with itself (members of one label are right answers
for each other, a row never for itself); pair mode contrasts queries with their documents both
ways, as clip-towers contrasts captions with images. Epoch 0 is the untrained (identity) head,
so early stopping keeps the base space when no epoch beats it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from engine.heads import EarlyStopping, contrastive_loss
from engine.tune.data import Examples
from engine.tune.head import Head

T = TypeVar("T")


@dataclass(frozen=True)
class TuneConfig:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    #: Multiplies cosine similarity in the loss (a fixed temperature of 0.05): measured on
    #: BANKING77, 10 and 30 gave 0.3-0.5 points less kNN@1 than 20.
    scale: float = 20.0
    patience: int = 4
    #: Small label sets (a few hundred examples) fit one batch: an "epoch" is then this many
    #: steps over reshuffled batches, so a hundred FAQ entries learn as much per epoch as many.
    min_steps: int = 20


def train_head(
    ex: Examples,
    score: Callable[[Head], float],
    seed: int,
    config: TuneConfig = TuneConfig(),
    progress: bool = False,
) -> tuple[Head, list[dict[str, Any]]]:
    """The best head on validation (``score``), and one record per epoch."""
    import tensorflow as tf

    dim = ex.anchors.shape[1]
    weight = tf.Variable(np.eye(dim, dtype=np.float32), name="tune_weight")
    bias = tf.Variable(np.zeros(dim, dtype=np.float32), name="tune_bias")
    variables = [weight, bias]

    def current() -> Head:
        return Head(weight.numpy().copy(), bias.numpy().copy())

    def restore(head: Head) -> None:
        weight.assign(head.weight)
        bias.assign(head.bias)

    def mapped(x: Any) -> Any:
        return tf.math.l2_normalize(tf.matmul(x, weight) + bias, axis=1)

    step = contrastive_step(mapped, [(config.learning_rate, variables)], ex, config.scale)
    return run_epochs(ex, step, current, restore, score, seed, config, progress, "tune stage 1")


def contrastive_step(
    mapped: Callable[[Any], Any],
    groups: list[tuple[float, list[Any]]],
    ex: Examples,
    scale: float,
) -> Callable[[Any, Any, Any], Any]:
    """One training step of ``mapped``: (learning rate, variables) groups, each its own Adam.

    Label mode contrasts a batch with itself, pair mode queries with documents both ways.
    """
    import keras
    import tensorflow as tf

    optimizers = []
    for rate, variables in groups:
        optimizer = keras.optimizers.Adam(rate)
        optimizer.build(variables)
        optimizers.append((optimizer, variables))
    every = [v for _, variables in groups for v in variables]
    pairs = ex.partners is not None

    @tf.function(reduce_retracing=True)
    def step(a: Any, b: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            x = mapped(a)
            if pairs:
                loss = contrastive_loss(x, mapped(b), labels, labels, scale, symmetric=True)
            else:
                loss = contrastive_loss(x, x, labels, labels, scale, exclude_self=True)
        grads = tape.gradient(loss, every)
        start = 0
        for optimizer, variables in optimizers:
            optimizer.apply(grads[start : start + len(variables)], variables)
            start += len(variables)
        return loss

    return step


def run_epochs(
    ex: Examples,
    step: Callable[[Any, Any, Any], Any],
    current: Callable[[], T],
    restore: Callable[[T], None],
    score: Callable[[T], float],
    seed: int,
    config: Any,
    progress: bool,
    desc: str,
) -> tuple[T, list[dict[str, Any]]]:
    """Seeded epochs of ``step`` over shuffled batches, early stopping on ``score``.

    Stage 1 (a head) and stage 2 (the encoder's top with a head) train this way; epoch 0 is
    the starting state, so early stopping keeps it when no epoch beats it.
    """
    from tqdm.auto import tqdm

    # NumPy's generator alone: nothing else is random. TensorFlow's global seed is left alone,
    # since setting it clears TensorFlow's kernel caches and with them the tokenizer of a
    # `use-multilingual` encoder the process serves.
    rng = np.random.default_rng(seed)
    pairs = ex.partners is not None
    stopper = EarlyStopping(config.patience, current)
    history: list[dict[str, Any]] = [{"epoch": 0, "val": score(current())}]
    stopper.update(history[0]["val"], 0)
    size = min(config.batch_size, len(ex.anchors))
    steps = max(config.min_steps, len(ex.anchors) // size)
    per_pass = max(1, len(ex.anchors) // size)
    bar = tqdm(
        total=config.epochs,
        desc=desc,
        unit="epoch",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            orders = [rng.permutation(len(ex.anchors)) for _ in range(-(-steps // per_pass))]
            losses = []
            for s in range(steps):
                order = orders[s // per_pass]
                rows = np.sort(order[(s % per_pass) * size : (s % per_pass + 1) * size])
                partners = ex.partners[rows] if pairs else ex.anchors[rows]
                losses.append(float(step(ex.anchors[rows], partners, ex.groups[rows])))
            val = score(current())
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)),
                    "val": val,
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val:.4f}")
            if stopper.update(val, epoch):
                break
    finally:
        bar.close()
    stopper.restore_best(restore)
    for record in history:
        record["best"] = record["epoch"] == stopper.best_epoch
    return current(), history
