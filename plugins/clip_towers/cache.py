"""Backbone features on disk, so that a rerun (new head size, more epochs) skips the backbones.

One folder per backbone configuration, named by a hash of its fingerprint (weights hash, input
size, cut, grid): features from another configuration can never be mixed in. Inside, rows are
keyed by content (an image file's SHA-256, a caption's SHA-256), not by path, so renaming files
keeps the cache and a changed file misses it. Rows are appended as immutable ``.npz`` shards,
each written to a temporary name and renamed into place: a killed run leaves only whole shards,
and two runs sharing the cache never write the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

SHARD_ROWS = 1024


def default_cache_dir() -> Path:
    """``$HUBSEARCH_CACHE``, else ``$XDG_CACHE_HOME/hubsearch`` or ``~/.cache/hubsearch``."""
    env = os.environ.get("HUBSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hubsearch"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class FeatureCache:
    """Arrays by key for one backbone configuration: ``missing``, ``add``, ``load``."""

    def __init__(self, root: str | os.PathLike[str], label: str, config: dict[str, Any]) -> None:
        blob = json.dumps(config, sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:16]
        self.folder = Path(root) / "clip-towers" / f"{label}-{digest}"
        self.folder.mkdir(parents=True, exist_ok=True)
        about = self.folder / "config.json"
        if not about.exists():
            about.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        self._index: dict[str, tuple[Path, int]] | None = None

    def index(self) -> dict[str, tuple[Path, int]]:
        """key -> (shard, row) over every shard on disk (read once, then kept up to date)."""
        if self._index is None:
            self._index = {}
            for shard in sorted(self.folder.glob("shard-*.npz")):
                with np.load(shard, allow_pickle=False) as z:
                    for row, key in enumerate(z["keys"].tolist()):
                        self._index[key] = (shard, row)
        return self._index

    def missing(self, keys: list[str]) -> list[str]:
        index = self.index()
        return [k for k in dict.fromkeys(keys) if k not in index]

    def add(self, keys: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Write one shard holding ``arrays[name][i]`` for ``keys[i]``."""
        if not keys:
            return
        name = self.folder / f"shard-{uuid.uuid4().hex}.npz"
        fd, temp = tempfile.mkstemp(prefix=".shard-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(keys), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, name)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        index = self.index()
        for row, key in enumerate(keys):
            index[key] = (name, row)

    def load(self, keys: list[str], name: str) -> np.ndarray:
        """Rows of array ``name`` for ``keys`` (all present), stacked in order."""
        index = self.index()
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, key in enumerate(keys):
            shard, row = index[key]
            by_shard.setdefault(shard, []).append((i, row))
        out: np.ndarray | None = None
        for shard, places in by_shard.items():
            with np.load(shard, allow_pickle=False) as z:
                rows = z[name]
            if out is None:
                out = np.empty((len(keys), *rows.shape[1:]), dtype=rows.dtype)
            where, which = zip(*places, strict=True)
            out[list(where)] = rows[list(which)]
        assert out is not None, "load() needs at least one key"
        return out
