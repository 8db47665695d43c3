"""Writing trained towers as a towers folder: two standalone SavedModels and ``towers.json``.

Each tower carries its whole preprocessing, so anyone can use it with ``hub.load`` or
``hub.KerasLayer`` and nothing from hubsearch:

* ``text/``: ``string[N]`` -> ``float32[N, dim]``; USE's in-graph SentencePiece tokenizer is
  inside, so, exactly as with the official USE modules, ``import tensorflow_text`` first;
* ``image/``: ``float32[N, S, S, 3]`` with values in [0, 1] (TF Hub's image convention) ->
  ``float32[N, dim]``; resize to S x S (whole frame, see pixels.py) before calling it.

Outputs are L2-normalised, so a dot product is the cosine similarity. Both SavedModels also have
a ``serving_default`` signature for TF Serving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plugins.clip_towers.backbones import ImageBackbone, TextBackbone, grid_pool, normalise_pixels
from plugins.clip_towers.heads import Heads
from plugins.clip_towers.spec import IMAGE_DIR, TEXT_DIR, TowersSpec, write_spec


def export_towers(folder: str | os.PathLike[str], spec: TowersSpec, *, text: TextBackbone,
                  image: ImageBackbone, heads: Heads) -> Path:
    """Write both towers and ``towers.json`` into ``folder`` (which must be empty or absent)."""
    import tensorflow as tf

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    size = spec.image.size

    def unit(x: Any) -> Any:
        return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=1)

    class TextTower(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="clip_text_tower")
            self.backbone = text.module()
            self.head = heads.text

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def __call__(self, inputs: Any) -> Any:
            return unit(self.head(self.backbone(inputs), training=False))

    class ImageTower(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="clip_image_tower")
            self.backbone = image.build().full
            self.head = heads.image

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def __call__(self, images: Any) -> Any:
            feature_map = self.backbone(normalise_pixels(images * 255.0), training=False)
            return unit(self.head(grid_pool(feature_map), training=False))

    for sub, tower in ((TEXT_DIR, TextTower()), (IMAGE_DIR, ImageTower())):
        signature = tower.__call__.get_concrete_function()
        tf.saved_model.save(tower, str(root / sub), signatures={"serving_default": signature})
    write_spec(root, spec)
    return root
