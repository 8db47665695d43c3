"""Uploaded images kept inside their collection, content-addressed, so hits can be shown.

An added upload is written to ``<collection>/blobs/<sha256>.<ext>`` (durably, before the add
commits) and its document's content is that file; the server answers with the URL path
``/collections/<name>/blobs/<file>`` instead. The same bytes uploaded twice are one file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

from engine.manifest import fsync_dir, write_atomic

BLOBS = "blobs"
BLOB_NAME = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,5}")
_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


def image_ext(data: bytes) -> str | None:
    """The file extension of an image's format from its header, or None if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _EXT.get(im.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def store_blob(folder: Path, data: bytes, ext: str) -> Path:
    """Write ``data`` under its hash (temp file, fsync, rename); an existing copy is kept."""
    blobs = folder / BLOBS
    path = blobs / f"{hashlib.sha256(data).hexdigest()}.{ext}"
    if path.exists():
        return path
    if not blobs.is_dir():
        blobs.mkdir(exist_ok=True)
        fsync_dir(folder)
    write_atomic(path, data)  # temp, fsync, rename, fsync the folder
    return path


def public_content(name: str, folder: Path, content: str) -> str:
    """The URL path of a stored upload, other contents unchanged."""
    prefix = os.path.abspath(folder / BLOBS) + os.sep
    if content.startswith(prefix) and BLOB_NAME.fullmatch(content[len(prefix) :]):
        return f"/collections/{name}/{BLOBS}/{content[len(prefix) :]}"
    return content
