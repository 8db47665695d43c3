"""Batched encoding for ``add``: the engine, not the plugin, batches and reports progress.

Images are decoded in a thread pool ahead of the model (``engine.images.iter_images``), so the
encoder never waits on disk or JPEG decoding; an image that cannot be read is reported by path
and skipped rather than failing the whole add.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from engine.encoders import IMAGE, Encoder


def encode_items(
    encoder: Encoder,
    items: Sequence[Any],
    batch_size: int | None,
    progress: bool,
    offset: int = 0,
    total: int | None = None,
    given: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray, list[tuple[str, str]]]:
    """Vectors for ``items`` (objects with ``modality``, ``source``, ``content``, ``position``).

    Returns the positions that were encoded, their vectors in that order, and
    ``(item, reason)`` for the ones skipped. With ``given`` (the caller's validated
    ``vectors=`` array; each item's ``position`` is its row) nothing is encoded.
    """
    if given is not None:
        return list(range(len(items))), _given_rows(given, items, progress, offset, total), []
    batch = max(1, int(batch_size or getattr(encoder, "batch_size", 64)))
    dim = encoder.dim
    kept: list[int] = []
    # Filled in place: stacking per-batch parts at the end held every vector twice.
    out = np.empty((len(items), dim), dtype=np.float32)
    skipped: list[tuple[str, str]] = []
    bar = _progress(progress, total or len(items), offset)
    try:
        for positions, sources, modality in _batches(encoder, items, batch, skipped):
            out[len(kept) : len(kept) + len(positions)] = encoder.encode(sources, modality)
            kept.extend(positions)
            if bar is not None:
                bar.update(len(positions))
    finally:
        if bar is not None:
            bar.close()
    return kept, out[: len(kept)], skipped


def _given_rows(
    given: np.ndarray, items: Sequence[Any], progress: bool, offset: int, total: int | None
) -> np.ndarray:
    """The items' rows of ``given``: a view when consecutive (an add of new items), so a
    100,000 x 512 add does not copy its input chunk by chunk; else one gather."""
    rows = np.fromiter((it.position for it in items), dtype=np.int64, count=len(items))
    bar = _progress(progress, total or len(items), offset)
    if bar is not None:
        bar.update(len(items))
        bar.close()
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return given[rows[0] : rows[-1] + 1]
    return given[rows]


def _batches(
    encoder: Encoder, items: Sequence[Any], batch: int, skipped: list[tuple[str, str]]
) -> Iterator[tuple[list[int], list[Any], str]]:
    images = [i for i, it in enumerate(items) if it.modality == IMAGE]
    texts = [i for i, it in enumerate(items) if it.modality != IMAGE]
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        yield chunk, [items[i].source for i in chunk], items[chunk[0]].modality
    if images:
        yield from _image_batches(encoder, items, images, batch, skipped)


def _image_batches(
    encoder: Encoder,
    items: Sequence[Any],
    positions: list[int],
    batch: int,
    skipped: list[tuple[str, str]],
) -> Iterator[tuple[list[int], list[Any], str]]:
    from engine.images import decode_min_side, iter_images

    paths = [items[i].content for i in positions]
    pending_pos: list[int] = []
    pending: list[np.ndarray] = []
    for pos, (path, array, error) in zip(
        positions, iter_images(paths, min_side=decode_min_side(encoder)), strict=True
    ):
        if array is None:
            skipped.append((str(path), error or "unreadable"))
            continue
        pending_pos.append(pos)
        pending.append(array)
        if len(pending) == batch:
            yield pending_pos, pending, IMAGE
            pending_pos, pending = [], []
    if pending:
        yield pending_pos, pending, IMAGE


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="doc",
        unit_scale=True,
        dynamic_ncols=True,
        desc="encoding",
        leave=False,
    )
