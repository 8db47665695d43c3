"""Decoding a huge PNG at reduced size without ever holding its full raster.

JPEG can be decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``); PNG cannot, and Pillow
always allocates the whole image, 1.2 GB for a 20,000 x 20,000 RGB poster. Here the compressed
rows are streamed through zlib, cut into strips of a few megabytes, and each strip is wrapped
into a tiny stand-alone PNG that Pillow decodes and shrinks. PNG row filters may refer to the
row above, so every strip but the first starts with the previous strip's last row, stored
unfiltered. Only 8-bit, non-interlaced images take this road; others are decoded whole, within
the memory limit ``engine.images`` checks from the header.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
#: Pixels converted at a time when a whole image cannot be shrunk before it is converted (here
#: and in ``engine.images``): about 8 MiB of 8-bit RGBA rows, 32 MiB once flattened.
STRIP_PIXELS = 1 << 21
#: Bytes this module holds per byte of a strip's filtered rows: the inflated buffer, the strip
#: with its carried-over row, the stored-deflate copy, the wrapping PNG and the decoded strip.
STREAM_COPIES = 6
_HEAD = struct.Struct(">I4s")


def strip_rows(width: int, factor: int) -> int:
    """Rows per strip: a multiple of ``factor`` (so boxes never straddle strips), ~STRIP_PIXELS."""
    return factor * max(1, STRIP_PIXELS // max(1, width * factor))


def stream_bytes(fp: BinaryIO, factor: int) -> int | None:
    """Memory :func:`decode_reduced` needs for the PNG file ``fp`` at ``factor``, not counting
    the output and the flattening of a strip; ``None`` unless it is 8-bit and non-interlaced
    (the streamable kind)."""
    fp.seek(0)
    head = fp.read(8 + _HEAD.size + 13)
    if len(head) < 29 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if depth != 8 or interlace or colour not in _CHANNELS:
        return None
    rows = min(height, strip_rows(width, factor) + 1)
    return STREAM_COPIES * rows * (1 + width * _CHANNELS[colour])


def decode_reduced(fp: BinaryIO, factor: int, *, shrink: Callable[[Any, int], Any]) -> Any:
    """The PNG file ``fp`` shrunk ``factor`` times (box filter), as an RGB Pillow image.

    ``shrink(strip, factor)`` turns a strip of any mode into RGB ``factor`` times smaller
    (alpha on white, palette resolved). Raises ``OSError`` mentioning "truncated" when rows
    are missing, other ``OSError`` when corrupt.
    """
    from PIL import Image

    fp.seek(0)
    header, extra, idat = _parse(fp)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace or colour not in _CHANNELS:
        raise OSError("PNG is not 8-bit non-interlaced")
    rowbytes = 1 + width * _CHANNELS[colour]
    rows_per_strip = strip_rows(width, factor)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    previous: bytes | None = None
    y = 0
    for rows in _rows_in_strips(idat, rowbytes, rows_per_strip, height):
        count = min(len(rows) // rowbytes, height - y)
        if count <= 0:
            break
        rows = rows[: count * rowbytes]
        data = (b"\0" + previous if previous is not None else b"") + rows
        strip = _decode_strip(header, extra, width, count + (previous is not None), data)
        if previous is not None:
            strip = strip.crop((0, 1, width, strip.height))
        previous = strip.crop((0, count - 1, width, count)).tobytes()
        out.paste(shrink(strip, factor), (0, y // factor))
        y += count
    if y < height:
        raise OSError(f"image file is truncated ({y} of {height} rows)")
    return out


def _parse(fp: BinaryIO) -> tuple[bytes, bytes, Iterator[bytes]]:
    """IHDR payload, the raw PLTE/tRNS chunks strips need, and a lazy IDAT payload iterator."""
    if fp.read(8) != SIGNATURE:
        raise OSError("not a PNG file")
    header = b""
    extra = b""
    while True:
        kind, data = _chunk(fp)
        if kind == b"IHDR":
            header = data
        elif kind in (b"PLTE", b"tRNS"):
            extra += _make_chunk(kind, data)
        elif kind == b"IDAT":
            break
        elif kind == b"IEND":
            raise OSError("PNG has no image data")
    if len(header) != 13:
        raise OSError("PNG header chunk is missing or malformed")

    def idat(first: bytes = data) -> Iterator[bytes]:
        yield first
        while True:
            try:
                kind, more = _chunk(fp)
            except OSError:
                return  # truncated after some data: the row count tells
            if kind != b"IDAT":
                return
            yield more

    return header, extra, idat()


def _chunk(fp: BinaryIO) -> tuple[bytes, bytes]:
    head = fp.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise OSError("image file is truncated (chunk header)")
    length, kind = _HEAD.unpack(head)
    if length > 1 << 31:
        raise OSError("corrupt PNG chunk length")
    data = fp.read(length)
    crc = fp.read(4)
    if len(data) < length or len(crc) < 4:
        raise OSError("image file is truncated (chunk data)")
    if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
        raise OSError(f"corrupt PNG: bad CRC in {kind.decode('latin-1')} chunk")
    return kind, data


def _rows_in_strips(
    idat: Iterator[bytes], rowbytes: int, strip_rows: int, height: int
) -> Iterator[bytes]:
    """Inflated, still filtered scanlines, ``strip_rows`` at a time; never more in memory."""
    inflate = zlib.decompressobj()
    want = strip_rows * rowbytes
    total = height * rowbytes
    buffer = bytearray()
    produced = 0
    for data in idat:
        pending = data
        while pending and produced < total:
            try:
                chunk = inflate.decompress(pending, want)
            except zlib.error as exc:
                raise OSError(f"corrupt PNG image data ({exc})") from None
            pending = inflate.unconsumed_tail
            buffer += chunk
            produced += len(chunk)
            while len(buffer) >= want:
                yield bytes(buffer[:want])
                del buffer[:want]
            if not chunk:
                break
    usable = min(len(buffer), max(0, total - (produced - len(buffer))))
    usable -= usable % rowbytes
    if usable:
        yield bytes(buffer[:usable])


def _decode_strip(header: bytes, extra: bytes, width: int, rows: int, data: bytes) -> Any:
    from PIL import Image

    strip_header = struct.pack(">II", width, rows) + header[8:]
    png = b"".join(
        (
            SIGNATURE,
            _make_chunk(b"IHDR", strip_header),
            extra,
            _make_chunk(b"IDAT", zlib.compress(data, 0)),
            _make_chunk(b"IEND", b""),
        )
    )
    im = Image.open(io.BytesIO(png), formats=("PNG",))
    im.load()
    return im


def _make_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
