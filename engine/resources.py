"""Locating and fingerprinting model files that ship inside installed packages.

Encoders identify their embedding space by a hash of their weights. Hashing tens of megabytes
on every collection open would dominate open time, so hashes are memoised per process keyed by
(path, size, mtime): a changed file gets a new hash, an unchanged one is hashed once.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from functools import lru_cache
from pathlib import Path

from engine.errors import PluginLoadError


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, with a clear error if it is absent."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise PluginLoadError(
            f"package {package!r} is not installed; install it with `pip install hubsearch` "
            f"(it provides {relative})"
        ) from exc
    path = Path(str(root.joinpath(relative)))
    if not path.is_file():
        raise PluginLoadError(f"{relative} is missing from the installed package {package!r}")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, cached while the file's size and mtime are unchanged."""
    st = os.stat(path)
    return _sha256(os.fspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
