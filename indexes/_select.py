"""FAISS id selectors for filtered search, built the cheap way for the ids at hand.

A filter is checked once per scanned vector, so the selector's membership test is the inner loop
of a filtered search. A bitmap costs one bit per possible id and answers in a shift and a mask;
a hash set (``IDSelectorBatch``) costs per allowed id and a hash per test. Engine ids are dense
enough that a bitmap nearly always wins; very sparse or negative ids take the hash set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A bitmap larger than this many bytes per allowed id (and over 1 MiB) is not worth building.
_BITMAP_BYTES_PER_ID = 16


@dataclass
class Selector:
    """A FAISS ``IDSelector`` plus the numpy buffer it reads, which must outlive the search."""

    sel: Any
    keep: Any = field(default=None, repr=False)


def bitmap(members: np.ndarray, size: int) -> np.ndarray:
    """Packed little-endian bitmap of ``size`` bits with ``members`` set (FAISS's layout)."""
    flags = np.zeros(size, dtype=bool)
    flags[members] = True
    return np.packbits(flags, bitorder="little")


def bitmap_selector(bits: np.ndarray) -> Selector:
    """Selector over a packed bitmap (FAISS takes its length in bytes, not bits)."""
    import faiss

    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    return Selector(faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits)


def id_selector(ids: np.ndarray) -> Selector:
    """Selector admitting exactly ``ids`` (int64 labels as stored in the FAISS index)."""
    import faiss

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) and ids.min() >= 0:
        size = int(ids.max()) + 1
        if size // 8 <= max(1 << 20, _BITMAP_BYTES_PER_ID * len(ids)):
            return bitmap_selector(bitmap(ids, size))
    return Selector(faiss.IDSelectorBatch(ids), ids)
