"""Writing the bundled encoder as a standalone TF2 SavedModel, usable without hubsearch.

The folder loads with ``hub.load(DIR)`` or ``hub.KerasLayer(DIR)`` (after ``import
tensorflow_text``, which registers the SentencePiece op, exactly as the official USE modules
require), or ``tf.saved_model.load``. The loaded object is callable ``string[N] -> float32[N,
512]``, and its ``serving_default`` signature maps ``inputs`` to ``outputs`` for TF Serving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import BadInput


def export_savedmodel(graph: Any, directory: str | os.PathLike[str]) -> Path:
    """Save ``graph`` (a UseGraph) to ``directory``, which must be absent or empty."""
    import tensorflow as tf

    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"export folder {str(target)!r} exists and is not empty")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": graph(inputs)}

    tf.saved_model.save(graph, str(target), signatures={"serving_default": serve})
    return target


def _tuned_text_class() -> Any:
    import tensorflow as tf

    from plugins.use_multilingual.graph import top

    class TunedText(tf.Module):
        """The bundled graph's frozen bottom with tuned top weights: strings -> unit vectors."""

        def __init__(self, graph: Any, weights: dict[str, Any]) -> None:
            super().__init__(name="use_multilingual_v3_tuned")
            self.graph = graph
            self.weights = {k: tf.Variable(v, trainable=False, name=k) for k, v in weights.items()}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def __call__(self, texts: Any) -> Any:
            return top(self.weights, self.graph.features(texts), self.graph.eps)

    return TunedText


def TunedText(graph: Any, weights: dict[str, Any]) -> Any:
    """A ``tf.Module`` of the tuned text path (TensorFlow is imported only when one is built)."""
    return _tuned_text_class()(graph, weights)
