"""Measuring towers on held-out pairs: recall@1/5/10 text -> image and image -> text.

Images and captions go through the ``clip-towers`` encoder exactly as they would through a
collection (same decoding, same preprocessing), so the figures describe what search will do.
Each distinct image is one candidate, carrying the groups of all its pairs (metrics.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.images import decode_min_side, iter_images
from plugins.clip_towers.metrics import KS, both_ways
from plugins.clip_towers.pairs import Skipped, read_pairs

IMAGE_CHUNK = 256


@dataclass
class EvalReport:
    pairs: int
    used: int
    images: int
    recall: dict[str, dict[int, float]]
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall"] = {way: {f"@{k}": v for k, v in r.items()} for way, r in self.recall.items()}
        return data


def evaluate_towers(
    encoder: Any,
    pairs_file: str | os.PathLike[str],
    *,
    image_field: str = "image",
    text_field: str = "text",
    group_field: str | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> EvalReport:
    """Recall@k of ``encoder`` (a ClipTowersEncoder) on the pairs of ``pairs_file``."""
    pairs = read_pairs(pairs_file, image_field, text_field, group_field)
    distinct = list(dict.fromkeys(p.image for p in pairs))
    vectors: dict[Path, np.ndarray] = {}
    errors: dict[Path, str] = {}
    chunk: list[tuple[Path, np.ndarray]] = []

    def encode_chunk() -> None:
        encoded = encoder.encode([a for _, a in chunk], "image")
        vectors.update(zip([p for p, _ in chunk], encoded, strict=True))
        chunk.clear()

    for item in iter_images(distinct, min_side=decode_min_side(encoder)):
        if item.array is None:
            errors[item.path] = item.error or "not readable"
            continue
        chunk.append((item.path, item.array))
        if len(chunk) == IMAGE_CHUNK:
            encode_chunk()
    if chunk:
        encode_chunk()

    skipped = [Skipped(p.where, str(p.image), errors[p.image]) for p in pairs if p.image in errors]
    for s in skipped:
        if on_skip:
            on_skip(s)
    usable = [p for p in pairs if p.image in vectors]
    if not usable:
        raise BadInput(f"{os.fspath(pairs_file)}: no usable pairs to evaluate")
    group_ids: dict[str, int] = {}
    text_groups = [group_ids.setdefault(p.group, len(group_ids)) for p in usable]
    image_groups: dict[Path, set[int]] = {}
    for pair, group in zip(usable, text_groups, strict=True):
        image_groups.setdefault(pair.image, set()).add(group)
    images = list(image_groups)
    recall = both_ways(
        encoder.encode([p.text for p in usable], "text"),
        np.stack([vectors[i] for i in images]),
        text_groups,
        [frozenset(image_groups[i]) for i in images],
        KS,
    )
    return EvalReport(len(pairs), len(usable), len(images), recall, skipped)
