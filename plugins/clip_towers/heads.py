"""The trainable projection heads that map both backbones into one shared space.

The image head applies one shared 1x1 projection to every cell of the ``GRID x GRID`` feature
map and then a dense layer over the flattened cells, so *where* a feature sits survives into the
embedding; the text head is a two-layer MLP over the USE vector. Both are small (a few hundred
thousand weights per 1280 channels), which is what makes an epoch over cached features cost
milliseconds per batch. A learnable temperature scales similarities in the contrastive loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Width of the per-cell projection of the image map.
CELL_WIDTH = 128
TEXT_HIDDEN = 512
DROPOUT = 0.1
#: CLIP's start (1/0.07) and ceiling (100) for the logit scale.
INITIAL_SCALE = 1 / 0.07
MAX_SCALE = 100.0


@dataclass
class Heads:
    """Both heads and the log of the logit scale (``exp`` of it multiplies cosine similarity)."""

    image: Any
    text: Any
    log_scale: Any

    @property
    def variables(self) -> list[Any]:
        return [*self.image.trainable_variables, *self.text.trainable_variables, self.log_scale]

    def scale(self) -> Any:
        import tensorflow as tf

        return tf.exp(tf.minimum(self.log_scale, math.log(MAX_SCALE)))

    def snapshot(self) -> list[Any]:
        return [*self.image.get_weights(), *self.text.get_weights(), self.log_scale.numpy()]

    def restore(self, weights: list[Any]) -> None:
        n_image = len(self.image.get_weights())
        n_text = len(self.text.get_weights())
        self.image.set_weights(weights[:n_image])
        self.text.set_weights(weights[n_image : n_image + n_text])
        self.log_scale.assign(weights[-1])


def build_heads(grid_shape: tuple[int, int, int], text_width: int, dim: int,
                mixed_precision: bool = False) -> Heads:
    """Fresh heads; with ``mixed_precision`` they compute in float16 and return float32."""
    import keras
    import tensorflow as tf

    policy = "mixed_float16" if mixed_precision else "float32"
    layers = keras.layers

    feature_map = keras.Input(grid_shape, name="grid_features")
    x = layers.Dense(CELL_WIDTH, activation="gelu", dtype=policy, name="cell_projection")(
        feature_map)
    x = layers.Reshape((grid_shape[0] * grid_shape[1] * CELL_WIDTH,), name="cells")(x)
    x = layers.Dropout(DROPOUT, dtype=policy, name="image_dropout")(x)
    x = layers.Dense(dim, dtype=policy, name="image_projection")(x)
    image = keras.Model(feature_map, layers.Activation("linear", dtype="float32")(x),
                        name="image_head")

    caption = keras.Input((text_width,), name="caption_features")
    y = layers.Dense(TEXT_HIDDEN, activation="gelu", dtype=policy, name="text_hidden")(caption)
    y = layers.Dropout(DROPOUT, dtype=policy, name="text_dropout")(y)
    y = layers.Dense(dim, dtype=policy, name="text_projection")(y)
    text = keras.Model(caption, layers.Activation("linear", dtype="float32")(y),
                       name="text_head")

    log_scale = tf.Variable(math.log(INITIAL_SCALE), dtype=tf.float32, name="log_logit_scale")
    return Heads(image, text, log_scale)


def float32_copy(heads: Heads) -> Heads:
    """The same heads computing in float32: what an exported tower should run anywhere."""
    grid_shape = tuple(int(d) for d in heads.image.inputs[0].shape[1:])
    text_width = int(heads.text.inputs[0].shape[-1])
    dim = int(heads.text.outputs[0].shape[-1])
    copy = build_heads(grid_shape, text_width, dim, mixed_precision=False)  # type: ignore[arg-type]
    copy.restore(heads.snapshot())
    return copy
