"""The TensorFlow side: one traced function per model, and the SavedModel export.

Value scaling lives inside the graph so that the Python side ships compact ``uint8`` batches,
and the function has a fixed input signature so it is traced once, whatever the batch size.
TensorFlow places it on the GPU when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import PluginLoadError
from plugins.efficientnet.preprocess import ValueRange


def call_model(model: Any, x: Any) -> Any:
    """Features of ``x`` from a Keras model or a restored SavedModel, as ``[N, width]``."""
    import tensorflow as tf

    try:
        out = model(x, training=False)
    except (TypeError, ValueError):  # restored functions without a `training` argument
        out = model(x)
    if isinstance(out, dict):
        if len(out) != 1:
            raise PluginLoadError(f"model returns several outputs {sorted(out)}; expected one")
        out = next(iter(out.values()))
    if out.shape.rank == 4:  # a feature map, not yet pooled
        out = tf.reduce_mean(out, axis=[1, 2])
    if out.shape.rank != 2:
        raise PluginLoadError(f"model output has shape {out.shape}; expected [batch, width]")
    return out


def feature_function(model: Any, size: int, values: ValueRange) -> Callable[[np.ndarray], Any]:
    """``uint8 [N, size, size, 3]`` -> features, traced once for every batch size."""
    import tensorflow as tf

    offset, scale = float(values.offset), float(values.scale)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def features(images: Any) -> Any:
        x = (tf.cast(images, tf.float32) - offset) / scale
        return call_model(model, x)

    return features


def output_width(function: Any, size: int) -> int:
    """Width of the traced function's output, read from its signature (nothing is run)."""
    import tensorflow as tf

    concrete = function.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.uint8))
    width = concrete.structured_outputs.shape[-1]
    if width is None:
        raise PluginLoadError("the model's output width is not static; pass -o dim=N")
    return int(width)


def export_savedmodel(model: Any, directory: str | os.PathLike[str], size: int,
                      values: ValueRange) -> None:
    """Write ``model`` as a SavedModel: ``float32 [N, size, size, 3]`` in [0, 1] -> features.

    That is the TF Hub image feature-vector convention, so ``hub.KerasLayer(directory)`` and
    ``hub.load(directory)`` work without hubsearch, and ``-o handle=DIR`` reads it back.
    """
    import tensorflow as tf

    offset, scale = float(values.offset), float(values.scale)

    class FeatureVector(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="efficientnet_feature_vector")
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, images: Any) -> Any:
            return call_model(self.model, (images * 255.0 - offset) / scale)

    module = FeatureVector()
    signature = module.__call__.get_concrete_function()
    tf.saved_model.save(module, os.fspath(directory), signatures={"serving_default": signature})
