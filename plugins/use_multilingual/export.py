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
