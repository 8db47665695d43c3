"""Real photographs available offline, their augmented copies, and cheap giant images.

scikit-image and scikit-learn ship a handful of real photos; tests and ``bench/encode_image.py``
build their image sets from these instead of downloading anything. The giant-image writers
produce 20,000 x 20,000 files in a second or two without ever holding the raster in memory.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

#: Colour photographs shipped inside scikit-image (no download needed).
SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
                  "retina", "rocket")
#: Greyscale photographs and scans shipped inside scikit-image.
SKIMAGE_GREY = ("camera", "moon", "coins", "clock", "brick", "grass", "gravel", "page", "text",
                "cell")


def real_photos() -> dict[str, np.ndarray]:
    """Every real photo we can get offline, as RGB uint8, by name."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SKIMAGE_COLOUR:
            photos[name] = getattr(skimage.data, name)()
        photos["motorcycle"] = skimage.data.stereo_motorcycle()[0]
        for name in SKIMAGE_GREY:
            grey = getattr(skimage.data, name)()
            photos[name] = np.repeat(grey[:, :, None], 3, axis=2)
        samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images, strict=True):
        photos[Path(filename).stem] = image
    return photos


def distinct_images(minimum: int = 24) -> dict[str, np.ndarray]:
    """The real photos plus non-overlapping halves of the larger ones, at least ``minimum``."""
    images = dict(real_photos())
    for name in ("china", "flower", "coffee", "rocket", "astronaut", "motorcycle"):
        image = images[name]
        half = image.shape[1] // 2
        images[f"{name}-left"] = np.ascontiguousarray(image[:, :half])
        images[f"{name}-right"] = np.ascontiguousarray(image[:, half:])
    assert len(images) >= minimum, len(images)
    return images


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 80 % crop, maybe mirrored, brightness +-20 %, through JPEG quality 40."""
    from PIL import Image, ImageEnhance

    height, width = image.shape[:2]
    crop_h, crop_w = int(height * 0.8), int(width * 0.8)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    pil = Image.fromarray(image[top : top + crop_h, left : left + crop_w])
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pil = ImageEnhance.Brightness(pil).enhance(float(rng.uniform(0.8, 1.2)))
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=40)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_grey_jpeg(path: Path, width: int, height: int) -> None:
    """A mid-grey baseline JPEG of any size, written without encoding a raster.

    Mid grey makes every 8x8 block's DC difference 0 and its AC coefficients 0, so each block
    is the same 6 bits (DC category 0, end of block) of Pillow's standard Huffman tables.
    """
    from PIL import Image

    small = io.BytesIO()
    Image.new("L", (8, 8), 128).save(small, "JPEG", quality=75, optimize=False)
    data = small.getvalue()
    sof, sos = data.index(b"\xff\xc0"), data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    head = bytearray(data[:scan])
    head[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    blocks = -(-width // 8) * -(-height // 8)
    assert blocks % 4 == 0, "4 blocks of 6 bits make 3 whole bytes"
    pattern = int("001010" * 4, 2).to_bytes(3, "big")
    path.write_bytes(bytes(head) + pattern * (blocks // 4) + b"\xff\xd9")


def write_solid_png(path: Path, width: int, height: int, pixel: bytes = b"\x20\x80\xc0") -> None:
    """An 8-bit PNG of one colour (RGB for 3-byte ``pixel``, grey for 1), streamed row by row."""
    colour = {1: 0, 3: 2, 4: 6}[len(pixel)]
    row = b"\0" + pixel * width
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
