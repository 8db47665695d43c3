"""Uploaded images kept inside their collection, content-addressed, so hits can be shown.

An added upload is written to ``<collection>/blobs/<sha256>.<ext>`` (durably, before the add
commits) and its document's content is that file; the server answers with the URL path
``/collections/<name>/blobs/<file>`` instead. The same bytes uploaded twice are one file,
which stays while some document uses it (engine.blobs removes it after the last one goes).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.blobs import BLOB_NAME, BLOBS, blob_name, store_blob
from engine.collection import AddReport, Collection

__all__ = [
    "BLOBS", "BLOB_NAME", "add_uploads", "blob_name", "image_ext", "public_content",
    "public_contents",
]  # fmt: skip
_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


def image_ext(data: bytes) -> str | None:
    """The file extension of an image's format from its header, or None if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _EXT.get(im.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def add_uploads(
    col: Collection,
    uploads: Sequence[tuple[bytes, str]],
    ids: Sequence[Any],
    metadata: Sequence[Any] | None,
    vectors: Any,
) -> tuple[list[str], AddReport]:
    """Store (bytes, ext) uploads as blobs and add them as images; returns (paths, report).

    One blocking call, so the blob lock is held shared by one thread from writing the files
    until the add has committed: a delete's removal of the last row using the same bytes
    cannot slip in between (engine.blobs). Files the add did not take (it failed, or skipped
    them) go again unless another document uses the same bytes.
    """
    paths: list[str] = []
    try:
        with col.blobs.using():
            paths = [str(store_blob(col.folder, data, ext)) for data, ext in uploads]
            report = col.add(images=paths, vectors=vectors, ids=ids, metadata=metadata)
    except BaseException:
        col.blobs.release(paths)  # an add that failed (bad metadata, a 503) names none of them
        raise
    col.blobs.release([path for path, _ in report.skipped])  # stored, then refused by the add
    return paths, report


def public_content(name: str, folder: Path, content: str) -> str:
    """The URL path of a stored upload, other contents unchanged."""
    return public_contents(name, folder)(content)


def public_contents(name: str, folder: Path) -> Callable[[str], str]:
    """:func:`public_content` for many contents of one collection: the folder's absolute path
    is worked out once, not per hit (on the event loop, per hit, it showed in profiles)."""
    prefix = os.path.abspath(folder / BLOBS) + os.sep

    def public(content: str) -> str:
        if content.startswith(prefix) and BLOB_NAME.fullmatch(content[len(prefix) :]):
            return f"/collections/{name}/{BLOBS}/{content[len(prefix) :]}"
        return content

    return public
