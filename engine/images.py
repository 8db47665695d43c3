"""Turning whatever a user calls an image into an RGB ``uint8 [h, w, 3]`` array, safely.

Encoders look at a few hundred pixels a side, but users hand over phone photos, scans, 20,000 x
20,000 posters, palette GIFs, CMYK JPEGs and truncated downloads. This module decodes them all the
same way (EXIF orientation applied, alpha composited on white, first GIF frame), decodes large
images at reduced size where the format allows it (JPEG DCT scaling, streamed PNG rows) instead
of holding the full raster in memory, and turns every failure into a :class:`BadInput` naming
the item and the reason. :func:`iter_images` runs that in a thread pool ahead of the consumer
so the model never waits on disk or decoding.
"""

from __future__ import annotations

import glob
import io
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.errors import BadInput

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
#: Formats we let Pillow open; anything else is "not an image" (less parser surface to attack).
PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
#: Largest image (by header) we agree to look at; a 20,000 x 20,000 poster is 0.4 of it.
MAX_SOURCE_PIXELS = 1 << 30
#: Decoded rasters larger than this are reduced (box filter) before anything else touches them.
MAX_DECODED_PIXELS = 1 << 24
#: Largest raster decoded whole when the format has no reduced-size decoding (interlaced or
#: 16-bit PNG, BMP, GIF, WebP): a 16,000 x 16,000 RGB image.
MAX_FULL_DECODE_BYTES = 1 << 30
#: Decode at least this many pixels on the short side per pixel of encoder input.
DECODE_OVERSAMPLING = 2

_PIL_LIMIT_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})


class ImageResult(NamedTuple):
    """One item of :func:`iter_images`: ``array``, or ``error`` (the reason, without the path)."""

    path: Path
    array: np.ndarray | None
    error: str | None


def decode_min_side(encoder: Any) -> int | None:
    """Shortest side worth decoding for ``encoder`` (``None``: no hint, decode in full).

    Pass the same value to :func:`as_rgb_array` for queries as to :func:`iter_images` for the
    collection, so that an image yields the same vector on both roads.
    """
    size = getattr(encoder, "image_size", None)
    return int(size) * DECODE_OVERSAMPLING if size else None


def as_rgb_array(item: Any, label: str, *, min_side: int | None = None) -> np.ndarray:
    """``item`` (path, bytes, PIL image or array) as RGB ``uint8 [h, w, 3]``.

    ``min_side`` lets the decoder shrink the image while its shorter side stays at least that
    long. Raises :class:`BadInput` starting with ``label`` for anything unreadable.
    """
    from PIL import Image

    if isinstance(item, np.ndarray):
        return _array_to_rgb(item, label)
    if isinstance(item, Image.Image):
        return _pil_to_rgb(item, label, min_side)
    if isinstance(item, (bytes, bytearray, memoryview)):
        if not len(item):
            raise BadInput(f"{label}: empty image data")
        return _decode(io.BytesIO(bytes(item)), label, min_side)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BadInput(f"{label}: cannot read {path} ({exc.strerror or exc})") from None
        if not path.is_file():
            raise BadInput(f"{label}: {path} is not a file")
        if size == 0:
            raise BadInput(f"{label}: {path} is an empty file")
        try:
            with open(path, "rb") as f:
                return _decode(f, label, min_side)
        except OSError as exc:
            raise BadInput(f"{label}: cannot read {path} ({exc.strerror or exc})") from None
    raise BadInput(
        f"{label}: expected an image path, bytes, PIL image or array, got {type(item).__name__}"
    )


def iter_images(
    paths: Iterable[str | os.PathLike[str]],
    *,
    min_side: int | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
) -> Iterator[ImageResult]:
    """Decode ``paths`` in a thread pool, ``prefetch`` items ahead, yielding in input order.

    A bad file yields its error message instead of raising, so one broken file never stops an
    add. Pillow releases the GIL while decoding, so threads give real parallelism.
    """
    workers = max(1, workers or min(16, (os.cpu_count() or 1) + 2))
    prefetch = max(1, prefetch or 4 * workers)
    pending: deque[tuple[Path, Future[np.ndarray]]] = deque()
    source = iter(paths)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hubsearch-decode")

    def submit_next() -> None:
        for raw in source:
            path = Path(raw)
            pending.append((path, pool.submit(as_rgb_array, path, str(path), min_side=min_side)))
            return

    try:
        for _ in range(prefetch):
            submit_next()
        while pending:
            path, future = pending.popleft()
            submit_next()
            try:
                yield ImageResult(path, future.result(), None)
            except BadInput as exc:
                yield ImageResult(path, None, str(exc).removeprefix(f"{path}: "))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def expand_image_paths(args: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by ``args``: files as given, folders recursively, globs (``**``).

    Inside folders and globs only image extensions count; a file named explicitly is kept
    whatever its extension, so a misnamed or broken file is reported instead of vanishing.
    Absolute paths, sorted, without duplicates.
    """
    found: dict[str, Path] = {}

    def add(path: Path, explicit: bool) -> None:
        if path.is_dir():
            for child in path.rglob("*"):
                add_file(child)
        elif explicit or path.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(os.path.abspath(path), Path(os.path.abspath(path)))

    def add_file(path: Path) -> None:
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.setdefault(os.path.abspath(path), Path(os.path.abspath(path)))

    for arg in args:
        text = os.fspath(arg)
        if glob.has_magic(text):
            matches = glob.glob(os.path.expanduser(text), recursive=True)
            if not matches:
                raise BadInput(f"{text}: the pattern matches no files")
            for match in matches:
                add(Path(match), explicit=False)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                raise BadInput(f"{text}: no such file or folder")
            add(path, explicit=True)
    return [found[key] for key in sorted(found)]


# ----------------------------------------------------------------------------------------------


@contextmanager
def _pil_pixel_limit(limit: int) -> Iterator[None]:
    """Pillow's bomb guard raised to ``limit`` while a header is parsed, then restored.

    ``MAX_IMAGE_PIXELS`` is process-global, so the window is tiny (header only) and locked;
    our own checks take over from there.
    """
    from PIL import Image

    with _PIL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        if old is not None:
            Image.MAX_IMAGE_PIXELS = max(old, limit)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _decode(fp: Any, label: str, min_side: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from engine import png_stream

    Image.init()  # registers WebP, which Pillow's lazy pre-init leaves out
    try:
        with _pil_pixel_limit(MAX_SOURCE_PIXELS):
            im = Image.open(fp, formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise BadInput(f"{label}: not an image, or not JPEG/PNG/GIF/BMP/WebP") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadInput(f"{label}: unreadable image header ({exc})") from None
    with im:
        width, height = im.size
        if width * height > MAX_SOURCE_PIXELS:
            raise BadInput(f"{label}: {width}x{height} is too large (limit {MAX_SOURCE_PIXELS} px)")
        try:
            orientation = _orientation(im)
            factor = _reduction(im.size, min_side)
            if im.format in ("JPEG", "MPO") and factor > 1:
                im.draft(im.mode, (-(-width // factor), -(-height // factor)))
            elif im.format == "PNG" and factor > 1 and png_stream.can_stream(fp):
                reduced = png_stream.decode_reduced(fp, factor, flatten=_flatten)
                return _finish(reduced, label, min_side, orientation)
            if factor > 1 and _raster_bytes(im) > MAX_FULL_DECODE_BYTES:
                raise BadInput(
                    f"{label}: {width}x{height} {im.format} cannot be decoded at reduced size "
                    "and is too large to decode whole; convert it to JPEG or 8-bit PNG"
                )
            if im.format == "GIF":
                im.seek(0)
            im.load()
            return _finish(im, label, min_side, orientation)
        except BadInput:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            reason = "truncated" if "truncated" in str(exc) else "corrupt"
            raise BadInput(f"{label}: {reason} image data ({exc})") from None


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """Largest integer shrink factor that keeps ``min_side`` and the pixel budget satisfied."""
    width, height = size
    factor = 1
    if min_side:
        factor = max(1, min(width, height) // int(min_side))
    while (width // factor) * (height // factor) > MAX_DECODED_PIXELS:
        factor += 1
    return factor


def _raster_bytes(im: Any) -> int:
    """Memory Pillow needs to hold ``im`` decoded (it pads 3-band pixels to 4 bytes)."""
    per_pixel = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    return im.size[0] * im.size[1] * per_pixel


def _orientation(im: Any) -> int:
    """EXIF orientation (1 = upright) without decoding pixels.

    Pillow's PNG ``getexif`` decodes the whole image to look for an eXIf chunk after the pixel
    data; for a 20,000 px poster that is the very allocation we avoid, so for a PNG only a
    chunk before the pixels counts.
    """
    from PIL import Image

    try:
        if im.format == "PNG" and getattr(im, "fp", None) is not None:
            exif = Image.Exif()
            if "exif" in im.info:
                exif.load(im.info["exif"])
            return int(exif.get(_EXIF_ORIENTATION, 1))
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not cost the picture
        return 1


def _pil_to_rgb(im: Any, label: str, min_side: int | None) -> np.ndarray:
    try:
        return _finish(im, label, min_side, _orientation(im))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadInput(f"{label}: corrupt image data ({exc})") from None


def _finish(im: Any, label: str, min_side: int | None, orientation: int) -> np.ndarray:
    """Loaded image -> reduced to budget, RGB, upright -> array."""
    from PIL import Image

    factor = _reduction(im.size, min_side)
    if factor > 1:
        # Shrink before converting where averaging the stored values is meaningful (not for
        # palette indices): converting first would multiply the memory of a huge image.
        im = (im if im.mode in _REDUCIBLE_MODES else _flatten(im)).reduce(factor)
    im = _flatten(im)
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    if transpose is not None:
        im = im.transpose(transpose)
    array = np.asarray(im, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise BadInput(f"{label}: image has no pixels")
    return array


def _flatten(im: Any) -> Any:
    """Any Pillow mode as RGB: alpha composited on white, 16-bit scaled, CMYK/palette converted."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _array_to_rgb(array: np.ndarray, label: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise BadInput(f"{label}: expected an array [h, w], [h, w, 3] or [h, w, 4], "
                       f"got shape {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadInput(f"{label}: image has no pixels")
    if array.dtype != np.uint8:
        if array.dtype.kind == "f":
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise BadInput(f"{label}: float image values must lie in [0, 1]")
            array = np.rint(array * 255.0)
        elif array.dtype.kind in "iub":
            if array.min() < 0 or array.max() > 255:
                raise BadInput(f"{label}: integer image values must lie in 0..255")
        else:
            raise BadInput(f"{label}: unsupported array dtype {array.dtype}")
        array = array.astype(np.uint8)
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    if array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        rgb = array[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.rint(rgb).astype(np.uint8)
    return np.ascontiguousarray(array)
