"""Images to the numbers an image tower takes, identically for training and for search.

Training extracts backbone features from exactly what :func:`fit_square` returns, and the
encoder feeds the exported tower the same way, so a stored image, a query image and a training
image of the same file all see the same pixels. The default ``squash`` keeps the whole frame
(a caption saying "on the left" may be about the border a centre crop would cut away).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plugins.clip_towers.spec import ImageInput

#: uint8 -> tower values: ``x * scale + offset``.
_AFFINE = {"0,1": (1 / 255.0, 0.0), "-1,1": (2 / 255.0, -1.0), "0,255": (1.0, 0.0)}


def fit_square(image: np.ndarray, size: int, resize: str = "squash") -> np.ndarray:
    """``uint8 [h, w, 3]`` -> ``uint8 [size, size, 3]`` (bicubic; antialiased when shrinking)."""
    from PIL import Image

    height, width = image.shape[:2]
    if resize == "centre-crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        box = (left, top, left + side, top + side)
    else:
        box = (0, 0, width, height)
    if (height, width) == (size, size) and box == (0, 0, size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(resized, dtype=np.uint8)


def square_batch(images: Sequence[np.ndarray], size: int, resize: str = "squash") -> np.ndarray:
    """Images of any size as one ``uint8 [n, size, size, 3]`` batch."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = fit_square(image, size, resize)
    return out


def tower_input(batch: np.ndarray, spec: ImageInput) -> np.ndarray:
    """A ``uint8`` square batch in the dtype and value range the image tower declares."""
    if spec.dtype == "uint8":
        return batch
    scale, offset = _AFFINE[spec.value_range]
    return batch.astype(np.float32) * np.float32(scale) + np.float32(offset)
