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


def _sub_blocks(data: bytes) -> bytes:
    return b"".join(bytes([len(data[i : i + 255])]) + data[i : i + 255]
                    for i in range(0, len(data), 255)) + b"\0"


def solid_gif(width: int, height: int, *, transparent: bool = True) -> bytes:
    """A one-colour palette GIF of any size (optionally transparent), LZW-coded without a raster.

    For constant input LZW emits the colour, then codes 258, 259, ... for runs of 2, 3, ...
    pixels; a clear code before the table reaches 512 keeps every code 9 bits, so eight such
    cycles are byte-aligned and repeat verbatim: 16,000 x 16,000 costs about 2 MB.
    """
    clear, end = 256, 257
    cycle = [clear, 0, *range(258, 511)]  # 1 + 2 + ... + 254 pixels
    cycle_pixels = 1 + sum(range(2, 255))
    total = width * height
    codes_tail: list[int] = []
    cycles, rest = divmod(total, cycle_pixels)
    groups, loose = divmod(cycles, 8)
    codes_tail += cycle * loose
    if rest:
        codes_tail += [clear, 0]
        rest -= 1
        run = 2
        while rest >= run:
            codes_tail.append(256 + run)
            rest -= run
            run += 1
        if rest:
            codes_tail.append(256 + rest if rest >= 2 else 0)
    codes_tail.append(end)

    def pack(codes: list[int]) -> bytes:
        bits = sum(code << (9 * i) for i, code in enumerate(codes))
        return bits.to_bytes(-(-9 * len(codes) // 8), "little")

    lzw = pack(cycle * 8) * groups + pack(codes_tail)
    palette = bytes([200, 30, 30]) + b"\0" * 765
    control = b"\x21\xf9\x04\x01\0\0\0\0" if transparent else b""
    return b"".join((
        b"GIF89a", struct.pack("<HHBBB", width, height, 0xF7, 0, 0), palette, control,
        b"\x2c", struct.pack("<HHHHB", 0, 0, width, height, 0), b"\x08", _sub_blocks(lzw),
        b"\x3b",
    ))


def webp_header(width: int, height: int) -> bytes:
    """A 34-byte lossless WebP declaring ``width`` x ``height``, with no real pixel data."""
    bits = (width - 1) | (height - 1) << 14 | 1 << 28  # alpha hint; version 0
    payload = b"\x2f" + bits.to_bytes(4, "little") + b"\0" * 9
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(payload)) + b"WEBPVP8L" + struct.pack(
        "<I", len(payload)) + payload


def bmp_header(width: int, height: int, bits: int = 24) -> bytes:
    """A BMP declaring ``width`` x ``height`` (``bits`` per pixel) and holding no pixels."""
    colours = 256 if bits == 8 else 0
    offset = 14 + 40 + 4 * colours
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, colours, 0)
    palette = b"".join(bytes([i, i, i, 0]) for i in range(colours))
    return b"BM" + struct.pack("<IHHI", offset + 16, 0, 0, offset) + info + palette + b"\0" * 16


def progressive_jpeg_header(width: int, height: int) -> bytes:
    """A small progressive JPEG re-labelled ``width`` x ``height``, its scans left as they were."""
    from PIL import Image

    small = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 30)).save(small, "JPEG", progressive=True)
    data = bytearray(small.getvalue())
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bytes(width: int, height: int, *, depth: int = 8, colour: int = 3, interlace: int = 0,
              rows: int | None = None, transparent: bool = True) -> bytes:
    """A PNG of one colour (palette colour 3 with tRNS, or any other type), rows streamed.

    ``rows`` stops the pixel data early: a header-sized file declaring a huge image.
    """
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    count = height if rows is None else rows
    row_bytes = -(-width * channels * depth // 8) if count else 0  # a 2^30-wide row: no rows
    row = b"\0" + bytes([1 if colour == 3 else 0x60]) * row_bytes
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(count)) + deflate.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    extra = b""
    if colour == 3:
        extra = chunk(b"PLTE", bytes([200, 30, 30, 30, 200, 30]))
        if transparent:
            extra += chunk(b"tRNS", b"\x00\x80")
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
