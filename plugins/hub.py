"""TF Hub handles shared by every encoder plugin: pinning, fingerprinting and loading.

A live index must never drift to a new model version, so a remote handle must name its version
(``.../3``, ``.../versions/2``) and a local SavedModel folder is identified by the hash of its
graph and variables, not by its path.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from engine.errors import BadInput, PluginLoadError
from engine.resources import file_sha256

_PINNED_URL = re.compile(r"/(?:versions/)?\d+/?$")


def is_remote(handle: str) -> bool:
    return "://" in handle


def require_pinned(handle: str) -> None:
    """Refuse a remote handle without a version, saying how to pin it."""
    if not handle:
        raise BadInput("option 'handle' is empty: give a TF Hub URL with a version or a folder")
    if is_remote(handle):
        if not _PINNED_URL.search(handle.split("?")[0]):
            raise BadInput(
                f"handle {handle!r} is not pinned to a version: append the version number, "
                f"e.g. {handle.rstrip('/')}/3, so the model cannot change under a live index"
            )
    elif not Path(handle).is_dir():
        raise BadInput(f"handle {handle!r}: no such SavedModel folder (and not a URL)")


def handle_fingerprint(handle: str) -> dict[str, Any]:
    """What identifies a hub model: the pinned URL, or the content hash of a local folder."""
    require_pinned(handle)
    if is_remote(handle):
        return {"source": "hub", "handle": handle.rstrip("/")}
    return {"source": "savedmodel", "savedmodel_sha256": savedmodel_sha256(handle)}


def savedmodel_sha256(folder: str | os.PathLike[str]) -> str:
    """Hash of a SavedModel's graph and variables (assets too), independent of its location."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("variables/") or rel.startswith("assets/") or rel.endswith(".pb"):
            digest.update(rel.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def load_handle(handle: str, *, needs_text_ops: bool = False) -> Any:
    """``hub.load(handle)``; text models need tensorflow_text's ops registered first."""
    require_pinned(handle)
    if needs_text_ops:
        import tensorflow_text  # noqa: F401 - registers SentencePiece ops used by USE modules
    import tensorflow_hub as hub

    try:
        return hub.load(handle)
    except Exception as exc:  # network, format, missing ops: all the user's handle
        raise PluginLoadError(f"could not load TF Hub handle {handle!r}: {exc}") from exc
