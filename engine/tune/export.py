"""`hubsearch export-encoder --collection NAME DIR`: the text path of a tuned collection, whole.

The SavedModel maps ``string[N]`` to the vectors the collection's queries become: the encoder
(with its tuned top weights after `tune --full`), then the head, then L2 normalisation. So an
application can embed questions exactly as the collection does with TensorFlow alone
(``hub.KerasLayer(DIR)`` after ``import tensorflow_text``, as with the official USE modules).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.encoders import TEXT, Trainable
from engine.errors import BadInput


def export_text_path(col: Any, directory: str | os.PathLike[str]) -> Path:
    """Write ``col``'s query path as a SavedModel into ``directory`` (absent or empty)."""
    import tensorflow as tf

    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"export folder {str(target)!r} exists and is not empty")
    enc = col.encoder
    if TEXT not in enc.modalities or not isinstance(enc, Trainable) or enc.cannot_train():
        raise BadInput(
            f"collection {col.name!r}'s encoder {enc.name!r} has no TensorFlow text path "
            f"hubsearch can export (use-multilingual with source=bundled has)"
        )
    with col.view.reading() as served:
        head = served.head
        top = col.view.top
    base = enc.text_module(None if top is None else top[1])

    class TextPath(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="hubsearch_text_path")
            self.encoder = base
            self.weight = None if head is None else tf.Variable(head.weight, trainable=False)
            self.bias = None if head is None else tf.Variable(head.bias, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def __call__(self, inputs: Any) -> Any:
            x = self.encoder(inputs)
            if self.weight is not None:
                x = tf.matmul(x, self.weight) + self.bias
            return tf.math.l2_normalize(x, axis=1)

    module = TextPath()
    signature = module.__call__.get_concrete_function()
    tf.saved_model.save(module, str(target), signatures={"serving_default": signature})
    return target
