"""The image preprocessing every EfficientNet source shares: centre crop, resize, scale.

The official EfficientNet evaluation crops the centre ``size / (size + 32)`` of the shorter
side (87.5 % at 224) and resizes it bicubically; models were trained to see images framed that
way, so we frame them the same. Crop and resize run in Pillow on ``uint8`` (fast, and releases
the GIL); value scaling runs inside the TensorFlow graph, where it is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import BadInput

CROP_PADDING = 32


@dataclass(frozen=True)
class ValueRange:
    """Maps 0..255 pixels to what a model wants: ``(x - offset) / scale``."""

    offset: float
    scale: float
    label: str

    def describe(self) -> str:
        return f"(x - {self.offset:g}) / {self.scale:g}"


#: The official EfficientNet-Lite normalisation: 0..255 -> about [-1, 1].
LITE = ValueRange(127.0, 128.0, "lite")
#: Named ranges for hub modules and other sources (option ``value_range``).
RANGES = {
    "0,1": ValueRange(0.0, 255.0, "0,1"),
    "-1,1": ValueRange(127.5, 127.5, "-1,1"),
    "0,255": ValueRange(0.0, 1.0, "0,255"),
    "lite": LITE,
}


def parse_value_range(text: str) -> ValueRange:
    key = text.replace(" ", "").replace("[", "").replace("]", "")
    if key not in RANGES:
        raise BadInput(f"option 'value_range': expected one of {', '.join(RANGES)}, got {text!r}")
    return RANGES[key]


def describe(size: int, values: ValueRange) -> str:
    """What goes into a fingerprint: any change here changes the embedding space."""
    return f"centre-crop {size}/({size}+{CROP_PADDING}) of short side, bicubic {size}, " + (
        values.describe()
    )


def crop_and_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size/(size+32)`` of the short side, resized to ``size x size`` (uint8)."""
    from PIL import Image

    height, width = image.shape[:2]
    crop = max(1, int(size / (size + CROP_PADDING) * min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    box = (left, top, left + crop, top + crop)
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box))


def batch(images: list[np.ndarray], size: int) -> np.ndarray:
    """Images of any size as one ``uint8 [n, size, size, 3]`` batch."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = crop_and_resize(image, size)
    return out
