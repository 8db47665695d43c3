"""Training pieces shared by every head hubsearch trains on stored or cached vectors.

`hubsearch tune` (a projection head over a collection's frozen vectors) and the clip-towers
plugin (projection heads over cached backbone features) train the same way: seeded, with a
contrastive loss in which members of one group are all right answers for each other, keeping
the weights of the best validation epoch and stopping once ``patience`` epochs brought nothing
better. They live here, in the engine, so a plugin may use them and the engine never imports a
plugin. TensorFlow is imported only when training runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and TensorFlow's generators from one seed: a run can be repeated.

    Setting TensorFlow's global seed clears its kernel caches, which hold resources such as the
    SentencePiece model of a loaded `use-multilingual`: call it before loading models for a
    training run, never in a process that goes on serving an encoder it loaded earlier.
    """
    import keras

    keras.utils.set_random_seed(int(seed))


def contrastive_loss(
    a: Any,
    b: Any,
    a_groups: Any,
    b_groups: Any,
    scale: Any,
    symmetric: bool = False,
    exclude_self: bool = False,
) -> Any:
    """Softmax cross-entropy of each row of ``a`` over the rows of ``b`` (both L2-normalised).

    Every row of ``b`` in the same group as the row of ``a`` shares the target probability, so
    two captions of one image, or two utterances of one intent, are not pushed apart. With
    ``symmetric`` the rows of ``b`` also pick among ``a`` (CLIP's two-way InfoNCE); rows without
    any right answer on the other side do not count. ``exclude_self`` is for ``b is a`` (a
    batch of labelled examples contrasted with itself): row i must find another member of its
    group, not itself.
    """
    import tensorflow as tf

    logits = scale * tf.matmul(a, b, transpose_b=True)
    same = tf.cast(tf.equal(a_groups[:, None], b_groups[None, :]), tf.float32)
    if exclude_self:
        eye = tf.eye(tf.shape(a)[0])
        logits -= 1e9 * eye
        same *= 1.0 - eye

    def one_way(logits: Any, same: Any) -> Any:
        counts = tf.reduce_sum(same, axis=1, keepdims=True)
        losses = tf.nn.softmax_cross_entropy_with_logits(same / tf.maximum(counts, 1.0), logits)
        has = tf.cast(counts[:, 0] > 0, tf.float32)
        return tf.reduce_sum(losses * has) / tf.maximum(tf.reduce_sum(has), 1.0)

    loss = one_way(logits, same)
    if symmetric:
        loss = 0.5 * (loss + one_way(tf.transpose(logits), tf.transpose(same)))
    return loss


def info_nce(a: Any, b: Any, groups: Any, scale: Any) -> Any:
    """Symmetric InfoNCE over a batch of pairs; same-group pairs share the target probability."""
    return contrastive_loss(a, b, groups, groups, scale, symmetric=True)


@dataclass
class EarlyStopping:
    """Keeps the best validation epoch's weights; says when ``patience`` epochs brought nothing.

    ``snapshot`` copies the weights being trained; :meth:`restore_best` hands the best copy back
    (None when no epoch was ever validated).
    """

    patience: int
    snapshot: Callable[[], Any]
    best_score: float = float("-inf")
    best_weights: Any = None
    best_epoch: int = -1
    stale: int = 0
    scores: list[float] = field(default_factory=list)

    def update(self, score: float, epoch: int) -> bool:
        """Record one epoch's validation score; True when training should stop."""
        self.scores.append(float(score))
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale = float(score), epoch, 0
            self.best_weights = self.snapshot()
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore_best(self, restore: Callable[[Any], None]) -> bool:
        if self.best_weights is None:
            return False
        restore(self.best_weights)
        return True
