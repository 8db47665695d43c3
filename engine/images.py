"""Turning whatever a user calls an image into an RGB ``uint8 [h, w, 3]`` array, safely.

Encoders look at a few hundred pixels a side, but users hand over phone photos, scans, 20,000 x
20,000 posters, palette GIFs, CMYK JPEGs and truncated downloads. This module decodes them all the
same way (EXIF orientation applied, alpha composited on white, first GIF frame), decodes large
images at reduced size where the format allows it (JPEG DCT scaling, streamed PNG rows) instead
of holding the full raster in memory, refuses from the header alone any image whose decoding
would take more than ``MAX_DECODE_BYTES`` (decompression bombs: a 34-byte WebP can declare
16,000 x 16,000), and turns every failure into a :class:`BadInput` naming the item and the
reason. :func:`iter_images` runs that in a thread pool ahead of the consumer
so the model never waits on disk or decoding.
"""

from __future__ import annotations

import functools
import glob
import io
import os
import struct
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
#: Most memory one image may take to decode, estimated from its header before any pixel is
#: read. JPEG and 8-bit non-interlaced PNG are decoded at reduced size and stay far below it;
#: GIF, BMP, WebP and other PNGs are decoded whole, so this caps their pixels (README: WebP
#: 12 Mpx, RGB BMP / 16-bit or interlaced PNG 48 Mpx, GIF / palette BMP about 190 Mpx).
MAX_DECODE_BYTES = 256 << 20
#: Memory all decodes in the process may hold at once (thread pool workers and query threads
#: together); a decode waits, in arrival order, until its estimate fits.
DECODE_MEMORY_BUDGET = MAX_DECODE_BYTES
#: Decode at least this many pixels on the short side per pixel of encoder input.
DECODE_OVERSAMPLING = 2

_PIL_LIMIT_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})
#: Bytes per pixel WebP takes on top of Pillow's raster: libwebp's animation decoder keeps two
#: RGBA canvases (allocated when the file is opened) and hands the frame over as a third copy.
_WEBP_EXTRA_BYTES_PER_PIXEL = 12
#: Bytes per pixel of a strip being flattened: RGBA copy, white backdrop, composite, RGB.
_FLATTEN_BYTES_PER_PIXEL = 16
#: Bytes per output pixel: the RGB raster (padded to 4 bytes) and its 3-byte array copy.
_OUTPUT_BYTES_PER_PIXEL = 8


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
        with open_image_file(path, label) as f:
            return _decode(f, label, min_side)
    raise BadInput(
        f"{label}: expected an image path, bytes, PIL image or array, got {type(item).__name__}"
    )


@contextmanager
def open_image_file(path: Path, label: str) -> Iterator[Any]:
    """``path`` opened for reading, or a :class:`BadInput` starting with ``label`` (missing,
    not a file, empty, unreadable): what an add reports for a file it cannot take, whether it
    decodes the file here or reads its bytes for an encoder elsewhere."""
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
            yield f
    except OSError as exc:
        raise BadInput(f"{label}: cannot read {path} ({exc.strerror or exc})") from None


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


class _MemoryBudget:
    """Bytes that decodes in this process may hold at once, granted first come, first served.

    The decode pool runs several workers and request threads decode queries concurrently; each
    image's limit alone would let N of them hold N times as much.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        nbytes = min(nbytes, self.total)
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or self._used + nbytes > self.total:
                self._cond.wait()
            self._queue.popleft()
            self._used += nbytes
            self._cond.notify_all()
        try:
            yield
        finally:
            if nbytes >= _TRIM_ABOVE_BYTES:
                _release_freed_memory()
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


_BUDGET = _MemoryBudget(DECODE_MEMORY_BUDGET)
#: A decode estimated this large hands the memory it freed back to the system when it ends.
_TRIM_ABOVE_BYTES = 32 << 20


def _release_freed_memory() -> None:
    """``malloc_trim``: glibc keeps what a thread freed in that thread's arena, so a pool whose
    workers decode large images in turn would otherwise keep one image's worth per worker."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim, or the allocator does it
        return None


def _decode(fp: Any, label: str, min_side: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from engine import png_stream

    Image.init()  # registers WebP, which Pillow's lazy pre-init leaves out
    _check_webp_header(fp, label)
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
            streamed = None
            scan_buffer = 0
            if im.format in ("JPEG", "MPO"):
                scan_buffer = _jpeg_scan_buffer_bytes(im, fp)
                if factor > 1:
                    im.draft(im.mode, (-(-width // factor), -(-height // factor)))
            elif im.format == "PNG" and factor > 1:
                streamed = png_stream.stream_bytes(fp, factor)
            cost = _decode_cost(im, min_side, streamed, scan_buffer)
            if cost > MAX_DECODE_BYTES:
                raise BadInput(
                    f"{label}: {width}x{height} {im.format} ({im.mode}) would take about "
                    f"{cost >> 20} MiB to decode (limit {MAX_DECODE_BYTES >> 20} MiB; JPEG and "
                    "8-bit non-interlaced PNG are decoded at reduced size, other images whole); "
                    "convert it to JPEG or 8-bit PNG"
                )
            with _BUDGET.reserve(cost):
                if streamed is not None:
                    reduced = png_stream.decode_reduced(fp, factor, shrink=_shrink)
                    return _finish(reduced, label, min_side, orientation)
                if im.format == "GIF":
                    im.seek(0)
                im.load()
                return _finish(im, label, min_side, orientation)
        except BadInput:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            reason = "truncated" if "truncated" in str(exc) else "corrupt"
            raise BadInput(f"{label}: {reason} image data ({exc})") from None


def _check_webp_header(fp: Any, label: str) -> None:
    """Refuses a WebP too large to decode before Pillow opens it.

    Pillow's WebP plugin creates libwebp's decoder, which allocates the full canvas, while it
    opens the file: a 34-byte file declaring 16,000 x 16,000 cost 3.9 GB before any check of
    ours could run.
    """
    fp.seek(0)
    head = fp.read(30)
    fp.seek(0)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return
    size = _webp_size(head)
    if size is None:
        raise BadInput(f"{label}: unreadable image header (WebP canvas size not found)")
    pixels = size[0] * size[1]
    cost = pixels * (4 + _WEBP_EXTRA_BYTES_PER_PIXEL)
    if cost > MAX_DECODE_BYTES:
        raise BadInput(
            f"{label}: {size[0]}x{size[1]} WEBP would take about {cost >> 20} MiB to decode "
            f"(limit {MAX_DECODE_BYTES >> 20} MiB; WebP cannot be decoded at reduced size); "
            "convert it to JPEG or 8-bit PNG"
        )


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size from the first 30 bytes of a WebP file (lossy, lossless or extended)."""
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        w = int.from_bytes(head[24:27], "little") + 1
        return w, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_scan_buffer_bytes(im: Any, fp: Any) -> int:
    """Memory libjpeg needs for a whole-image coefficient buffer, 0 if it decodes in one pass.

    A progressive JPEG, or one whose first scan holds fewer components than the frame, is
    buffered as 16-bit DCT coefficients for every block at full size, whatever scale ``draft``
    asks for: a tiny file can declare 30,000 x 30,000 and get 1.8 GB zeroed.
    """
    layers = getattr(im, "layer", None) or [(0, 1, 1, 0)]
    if not im.info.get("progressive") and _jpeg_first_scan_components(fp) == len(layers):
        return 0
    width, height = im.size
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks_w = _ceil_div(_ceil_div(width * h, h_max), 8)
        blocks_h = _ceil_div(_ceil_div(height * v, v_max), 8)
        total += blocks_w * blocks_h * 64 * 2
    return total


def _jpeg_first_scan_components(fp: Any) -> int | None:
    """Components in a JPEG's first scan (SOS), walking marker segments from the start."""
    fp.seek(0)
    if fp.read(2) != b"\xff\xd8":
        return None
    while True:
        byte = fp.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue
        marker = fp.read(1)
        while marker == b"\xff":
            marker = fp.read(1)
        if not marker or marker == b"\x00" or 0xD0 <= marker[0] <= 0xD8 or marker[0] == 0x01:
            continue
        length = fp.read(2)
        if len(length) < 2:
            return None
        if marker[0] == 0xDA:
            count = fp.read(1)
            return count[0] if count else None
        fp.seek(int.from_bytes(length, "big") - 2, 1)


def _decode_cost(im: Any, min_side: int | None, streamed: int | None, scan_buffer: int) -> int:
    """Estimated peak bytes of decoding ``im`` (after ``draft``) into the array we return.

    Mirrors the road :func:`_decode` takes: the raster (or the PNG stream's buffers), the
    reduced image, the RGB output, a strip being flattened, and the array copy.
    """
    from engine import png_stream

    factor = _reduction(im.size, min_side)
    width, height = im.size
    out = -(-width // factor) * -(-height // factor)
    strip = min(height, png_stream.strip_rows(width, factor)) * width * _FLATTEN_BYTES_PER_PIXEL
    array = 3 * out
    if streamed is not None:
        return streamed + strip + 4 * out + array
    cost = scan_buffer + _raster_bytes(im) + array
    if im.format == "WEBP":
        cost += width * height * _WEBP_EXTRA_BYTES_PER_PIXEL
    if im.mode == "RGB":
        return cost + (4 * out if factor > 1 else 0)
    if im.mode in _REDUCIBLE_MODES and factor > 1:
        cost += 4 * out  # the reduced image, before it is flattened
    return cost + 4 * out + strip


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """Largest integer shrink factor that keeps ``min_side`` and the pixel budget satisfied.

    Sizes round up, as ``Image.reduce`` rounds them: rounding down would let a one-row image
    a billion pixels wide count as empty.
    """
    width, height = size
    factor = 1
    if min_side:
        factor = max(1, min(width, height) // int(min_side))
    while -(-width // factor) * -(-height // factor) > MAX_DECODED_PIXELS:
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

    im = _shrink_whole(im, _reduction(im.size, min_side))
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


def _shrink(im: Any, factor: int, deep_max: float | None = None) -> Any:
    """``im`` as RGB, ``factor`` times smaller: shrunk first where averaging the stored values is
    meaningful (not palette indices), so the conversion only touches the small image."""
    if im.mode in _REDUCIBLE_MODES:
        return _flatten(im.reduce(factor) if factor > 1 else im, deep_max)
    flat = _flatten(im, deep_max)
    return flat.reduce(factor) if factor > 1 else flat


def _shrink_whole(im: Any, factor: int) -> Any:
    """:func:`_shrink` for a whole image, converting it to RGB a strip at a time.

    Converting a big palette, grey, bilevel, 16-bit or transparent image whole takes 4 to 16
    bytes a pixel at full size (4 GB for a 16,000 x 16,000 GIF with transparency).
    """
    from PIL import Image

    from engine import png_stream

    if im.mode in _REDUCIBLE_MODES and factor > 1:
        im, factor = im.reduce(factor), 1
    if im.mode == "RGB":
        return im
    width, height = im.size
    rows = png_stream.strip_rows(width, factor)
    if rows >= height:
        return _shrink(im, factor)
    deep_max = im.getextrema()[1] if im.mode.startswith("I") or im.mode == "F" else None
    out = Image.new("RGB", (_ceil_div(width, factor), _ceil_div(height, factor)))
    for top in range(0, height, rows):
        strip = im.crop((0, top, width, min(height, top + rows)))
        out.paste(_shrink(strip, factor, deep_max), (0, top // factor))
    return out


def _flatten(im: Any, deep_max: float | None = None) -> Any:
    """Any Pillow mode as RGB: alpha composited on white, 16-bit scaled, CMYK/palette converted.

    ``deep_max`` is the largest value of the whole image when ``im`` is a strip of a 16/32-bit
    one, so every strip is scaled alike.
    """
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if (values.max(initial=0) if deep_max is None else deep_max) > 255:
            values = values / 257.0
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        # Composite the palette, not the pixels: 256 entries instead of 16 bytes a pixel.
        opaque = im.copy()
        del opaque.info["transparency"]
        opaque.putpalette(_on_white(_palette_swatch(im)).tobytes(), "RGB")
        return opaque.convert("RGB")
    if "A" in mode or "a" in mode:
        return _on_white(im)
    return im.convert("RGB")


def _on_white(im: Any) -> Any:
    from PIL import Image

    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _palette_swatch(im: Any) -> Any:
    """A 256 x 1 image holding each palette entry of ``im`` once, with its transparency."""
    from PIL import Image

    swatch = Image.new("P", (256, 1))
    swatch.putdata(range(256))
    mode = im.palette.mode if im.palette is not None else "RGB"
    swatch.putpalette(im.getpalette(mode) or [], mode)
    swatch.info["transparency"] = im.info["transparency"]
    return swatch


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
