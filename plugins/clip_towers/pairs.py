"""Reading ``PAIRS.jsonl``: one ``{"image": "path", "text": "caption"}`` per line.

Image paths are relative to the pairs file, so a folder of photos and its pairs file move
together. A malformed line (bad JSON, a missing or non-string field) stops the run with
``file:line``: it is a mistake in the file, cheaper to fix than to train around. A missing or
corrupt *image* is different, it is data: it is reported with its reason and skipped (see
``features``), because one broken download must not sink a training run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInput

#: Fewer usable pairs than this cannot train anything worth exporting.
MIN_PAIRS = 32


@dataclass(frozen=True)
class Pair:
    where: str  # "file:line", for messages
    image: Path
    text: str
    #: Pairs with equal groups count as matches for each other (default: equal captions).
    group: str


@dataclass(frozen=True)
class Skipped:
    where: str
    image: str
    reason: str

    def line(self) -> str:
        return f"skipped {self.where} ({self.image}): {self.reason}"


def read_pairs(
    path: str | os.PathLike[str],
    image_field: str = "image",
    text_field: str = "text",
    group_field: str | None = None,
) -> list[Pair]:
    """All pairs of a JSONL file, image paths resolved against the file's folder."""
    source = Path(path)
    if not source.is_file():
        raise BadInput(f"{source}: no such pairs file")
    base = source.resolve().parent
    pairs = []
    with source.open("r", encoding="utf-8-sig") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{source.name}:{number}"
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise BadInput(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise BadInput(f"{where}: expected a JSON object with {image_field!r} and "
                               f"{text_field!r}")
            image = _field(record, image_field, where)
            text = _field(record, text_field, where)
            group = _field(record, group_field, where) if group_field else text
            pairs.append(Pair(where, base / image, text, group))
    return pairs


def require_enough(usable: int, skipped: int, source: str | os.PathLike[str]) -> None:
    if usable < MIN_PAIRS:
        detail = f" ({skipped} skipped)" if skipped else ""
        raise BadInput(f"{os.fspath(source)}: only {usable} usable pairs{detail}; training "
                       f"needs at least {MIN_PAIRS} image-caption pairs")


def _field(record: dict, name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else f"not a non-empty string ({value!r:.40})"
        raise BadInput(f"{where}: field {name!r} is {got}")
    return value
