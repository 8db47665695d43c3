"""The bounds on what one call may ask of the engine, in one place.

Each exists because the input past it escaped the error hierarchy (a RecursionError, a
MemoryError, an SQLite error after a vector was already appended) instead of being refused up
front with a line naming the item. A backend serving requests needs that line, not a 500.
The README's "Limits" paragraph lists them; change both together.
"""

from __future__ import annotations

import sys
from typing import Any

from engine.errors import BadInput

#: Default most hits one search may ask for; ``Collection.max_k`` raises it per collection.
#: Result arrays are sized by k before any hit is known, so k=2**40 was a 4 TiB allocation.
MAX_K = 10_000
#: Nesting of objects and lists in a ``where`` filter (recursive compilation, SQLite's
#: expression depth of 1,000).
MAX_WHERE_DEPTH = 32
#: Conditions in one ``where`` (each field operator and each $modality counts one; a $in
#: counts one whatever its length). Bounds SQLite's expression tree and bound parameters, so a
#: filter always fits next to a chunk of ids even where a build allows only 999 parameters.
MAX_WHERE_TERMS = 256
#: Nesting of objects and lists inside one document's metadata.
MAX_METADATA_DEPTH = 32
#: UTF-8 bytes of one text (document or query); SQLite refuses values past 1 GB, and only after
#: the vector of the text was appended.
MAX_TEXT_BYTES = 16 * 2**20
#: Metadata and filter numbers are compared as floats; a JSON integer past this (JSON has no
#: bound) was an OverflowError when converted, in a filter or at the store's write.
FLOAT_INT_BOUND = int(sys.float_info.max)


def check_k(k: Any, max_k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadInput(f"k must be a positive integer, got {k!r}")
    if k > max_k:
        raise BadInput(
            f"k={k} is over the limit of {max_k} hits per search; "
            f"raise it with collection.max_k = {k} if you need that many"
        )


def deeper_than(value: Any, limit: int) -> bool:
    """True when objects and lists nest more than ``limit`` levels in ``value``.

    Iterative, so a value nested thousands of levels is measured, not a RecursionError.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_text_size(text: str | bytes, label: str) -> None:
    """Refuse a text over MAX_TEXT_BYTES of UTF-8 (str length x 4 bounds it without encoding)."""
    if isinstance(text, str):
        if len(text) * 4 <= MAX_TEXT_BYTES:
            return
        text = text.encode("utf-8", "surrogatepass")
    if len(text) > MAX_TEXT_BYTES:
        raise BadInput(
            f"{label}: text is {len(text):,} bytes of UTF-8, over the limit of "
            f"{MAX_TEXT_BYTES // 2**20} MiB; split it into several documents"
        )
