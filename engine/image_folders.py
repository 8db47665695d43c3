"""Image folders as documents: which files, which ids, which sidecar metadata.

``hubsearch add photos ./catalogue`` and its cluster form (``--ray``, ``Collection.add_dataset``
on a folder of images) must give an image the same id and metadata, so that either add finds
the other's images unchanged and a search hit names the same document; both take them from
here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.images import expand_image_paths
from engine.ingest import read_sidecar


def image_files(args: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files ``args`` name (files, folders recursively, globs); at least one."""
    files = expand_image_paths(args)
    if not files:
        raise BadInput(f"no image files found in {', '.join(map(os.fspath, args))}")
    return files


def image_ids(files: Sequence[Path], args: Sequence[str | os.PathLike[str]]) -> list[str]:
    """An image's id is its path relative to the folder it was found in (stable if moved)."""
    roots = [Path(a).resolve() for a in args if Path(a).is_dir()]
    ids = []
    for f in files:
        resolved = f.resolve()
        root = next((r for r in roots if resolved.is_relative_to(r)), None)
        ids.append(resolved.relative_to(root).as_posix() if root else f.name)
    return ids


def sidecar_metadata(
    sidecar: Path, files: Sequence[Path], ids: Sequence[str]
) -> list[dict[str, Any]]:
    """Each image's sidecar row, keyed by its id, its path from the sidecar, or its file name."""
    table = read_sidecar(sidecar, "file")
    root = sidecar.resolve().parent
    out = []
    for ext, f in zip(ids, files, strict=True):
        resolved = f.resolve()
        relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None
        keys = [ext, relative, f.name]
        out.append(next((table[k] for k in keys if k in table), {}))
    return out
