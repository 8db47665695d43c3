"""The frozen backbones training starts from: the bundled EfficientNet-Lite0 and USE-m v3.

Locked-image tuning: the backbones stay as published and only small heads learn, so backbone
features are computed once per image and caption and cached. Global average pooling would throw
away *where* things are ("a red circle on the left"), so the image side keeps a coarse
``GRID x GRID`` map of the last feature layer (area-pooled; at 96 px input that is the map
itself). For the optional second stage the network is split before its last
``FINE_TUNE_BLOCKS`` blocks: the trunk below the cut stays frozen and its output is cached too,
so fine-tuning runs only the top blocks and the heads. Nothing here imports TensorFlow at
module level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.efficientnet import lite0
from plugins.efficientnet.preprocess import LITE
from plugins.efficientnet.sources import BundledSource

GRID = 3
#: Lite0 blocks (of 16) that stage 2 unfreezes, with the 1x1 head convolution after them.
FINE_TUNE_BLOCKS = 2
FINAL_LAYER = "head_relu6"


def cut_layer() -> str:
    """The layer whose output feeds the first unfrozen block."""
    last = len(lite0.block_specs()) - FINE_TUNE_BLOCKS - 1
    return f"blocks.{last}.add"


def grid_pool(feature_map: Any) -> Any:
    """``[N, h, w, C]`` -> ``[N, GRID, GRID, C]``: adaptive average pooling (bins as in
    PyTorch's ``AdaptiveAvgPool2d``; the identity when h = w = GRID). Differentiable, unlike
    ``tf.image.resize(method="area")``, which stage 2 needs. h and w must be static."""
    import tensorflow as tf

    def pool(x: Any, axis: int) -> Any:
        n = int(x.shape[axis])
        parts = []
        for i in range(GRID):
            lo, hi = (i * n) // GRID, -((-(i + 1) * n) // GRID)
            part = tf.gather(x, tf.range(lo, hi), axis=axis)
            parts.append(tf.reduce_mean(part, axis=axis, keepdims=True))
        return tf.concat(parts, axis=axis)

    return pool(pool(feature_map, 1), 2)


def normalise_pixels(images: Any) -> Any:
    """``uint8`` or ``float32`` 0..255 pixels -> Lite0's input range, in the graph."""
    import tensorflow as tf

    return (tf.cast(images, tf.float32) - LITE.offset) / LITE.scale


class ImageBackbone:
    """EfficientNet-Lite0 at ``size`` x ``size`` input, split at :func:`cut_layer`.

    ``trunk`` (frozen, cached), ``top`` (the unfrozen blocks; trainable in stage 2) and
    ``full`` share layers, so training ``top`` changes what ``full`` exports.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.source = BundledSource(lite0.IMAGE_SIZE, LITE, lite0.FEATURES)
        self.full: Any = None
        self.trunk: Any = None
        self.top: Any = None
        self._features: Any = None

    def fingerprint(self) -> dict[str, Any]:
        """What the cached features depend on (no TensorFlow needed)."""
        return {
            **self.source.fingerprint_fields(),
            "input": f"squash {self.size}x{self.size}, {LITE.describe()}",
            "cut": cut_layer(),
            "grid": f"adaptive average {GRID}x{GRID}",
        }

    def build(self) -> ImageBackbone:
        """Load the weights and build the three views of the network (once)."""
        if self.full is None:
            import keras

            native = self.source.load()
            # The bundled builder fixes the input at 224; a clone re-traces the same layers at
            # our size (all weights are size-independent) and takes the loaded weights.
            model = keras.models.clone_model(native, input_tensors=keras.Input(
                (self.size, self.size, 3), name="image"))
            model.set_weights(native.get_weights())
            cut = model.get_layer(cut_layer()).output
            final = model.get_layer(FINAL_LAYER).output
            self.full = keras.Model(model.input, final, name="lite0_features")
            self.trunk = keras.Model(model.input, cut, name="lite0_trunk")
            self.top = keras.Model(cut, final, name="lite0_top")
            self.top.trainable = False
        return self

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [N, size, size, 3]`` -> (trunk output, grid features), float16."""
        import tensorflow as tf

        self.build()
        if self._features is None:

            @tf.function(input_signature=[tf.TensorSpec([None, self.size, self.size, 3],
                                                         tf.uint8)])
            def run(images: Any) -> Any:
                cut = self.trunk(normalise_pixels(images), training=False)
                return cut, grid_pool(self.top(cut, training=False))

            self._features = run
        cut, grid = self._features(batch)
        return cut.numpy().astype(np.float16), grid.numpy().astype(np.float16)


class TextBackbone:
    """USE multilingual v3 (bundled): captions -> 512-d unit vectors, in 16 languages."""

    def __init__(self) -> None:
        from plugins.use_multilingual import UseMultilingualEncoder

        self.encoder = UseMultilingualEncoder()
        self.dim = self.encoder.dim

    def fingerprint(self) -> dict[str, Any]:
        return self.encoder.fingerprint

    def features(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, "text")

    def module(self) -> Any:
        """The TF graph, callable ``string[N] -> [N, 512]``, for embedding in the text tower."""
        return self.encoder.tf_module()
