"""`clip-towers`: a text tower and an image tower that map into one embedding space.

Texts and images go into the same collection and every query searches both: a complaint finds
the product photo, a screenshot finds the FAQ entry. Towers come from a towers folder (written
by ``hubsearch towers train`` or exported from any CLIP-style model, see spec.py) or from two
TF Hub handles. Construction reads only ``towers.json``; TensorFlow and the SavedModels load on
the first encode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.encoders import (
    IMAGE,
    TEXT,
    EncoderBase,
    Lazy,
    option_int,
    option_str,
    reject_unknown_options,
)
from engine.errors import BadInput
from plugins.clip_towers.pixels import square_batch, tower_input
from plugins.clip_towers.spec import IMAGE_DIR, TEXT_DIR, ImageInput, read_spec
from plugins.hub import handle_fingerprint, is_remote, require_pinned

OWNER = "encoder 'clip-towers'"
#: Options that describe towers given as two handles; a towers folder says them in its JSON.
HANDLE_OPTIONS = {"text", "image", "dim", "image_size", "image_input", "value_range", "resize"}
KNOWN = {"towers", "batch_size", *HANDLE_OPTIONS}


class ClipTowersEncoder(EncoderBase):
    """Texts and images -> unit vectors in one space, through two SavedModel towers.

    Options: ``towers`` (a towers folder), or ``text`` and ``image`` (pinned TF Hub handles or
    SavedModel folders) with ``dim``, ``image_size`` (224), ``image_input`` (float32 | uint8),
    ``value_range`` (0,1 | -1,1 | 0,255) and ``resize`` (squash | centre-crop) describing them;
    ``batch_size`` in both cases. See docs/clip-towers.md.
    """

    name = "clip-towers"
    uses_tensorflow = True
    modalities = frozenset({TEXT, IMAGE})
    external_options = frozenset({"towers", "text", "image"})
    batch_size = 64

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, KNOWN, OWNER)
        options = dict(options)
        towers = option_str(options, "towers")
        if towers is not None:
            given = sorted(set(options) & HANDLE_OPTIONS)
            if given:
                raise BadInput(f"{OWNER}: option {given[0]!r} does not go with 'towers' (the "
                               "folder's towers.json describes its towers)")
            root = Path(towers).expanduser().resolve()
            spec = read_spec(root)
            options["towers"] = str(root)  # a manifest must not depend on the cwd
            self.text_handle, self.image_handle = str(root / TEXT_DIR), str(root / IMAGE_DIR)
            self.image_input, self._dim = spec.image, spec.dim
        else:
            text, image = option_str(options, "text"), option_str(options, "image")
            if not text or not image:
                raise BadInput(f"{OWNER} needs -o towers=DIR (a towers folder), or both "
                               "-o text=HANDLE and -o image=HANDLE")
            for key in ("text", "image"):
                require_pinned(options[key])
                if not is_remote(options[key]):
                    options[key] = str(Path(options[key]).expanduser().resolve())
            self.text_handle, self.image_handle = options["text"], options["image"]
            self.image_input = ImageInput(
                size=_positive(options, "image_size") or 224,
                dtype=option_str(options, "image_input", "float32") or "float32",
                value_range=option_str(options, "value_range", "0,1") or "0,1",
                resize=option_str(options, "resize", "squash") or "squash",
            )
            self._dim = _positive(options, "dim")
        super().__init__(**options)
        self.batch_size = _positive(options, "batch_size") or type(self).batch_size
        self.image_size = self.image_input.size
        self._towers: Lazy[Any] = Lazy(self._load_towers)

    @property  # type: ignore[override]
    def dim(self) -> int:
        """Shared width; for two handles without ``dim`` it is read from their signatures."""
        if self._dim is None:
            towers = self.towers()
            if towers.dim is None:
                raise BadInput(f"{OWNER}: the towers do not declare their width; pass -o dim=N")
            self._dim = int(towers.dim)
        return self._dim

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {
            "model": "clip-towers",
            "text_tower": handle_fingerprint(self.text_handle),
            "image_tower": handle_fingerprint(self.image_handle),
            "text_input": "string",
            "image_input": self.image_input.describe(),
        }

    def _encode_batch(self, items: list[Any], modality: str) -> np.ndarray:
        towers = self.towers()
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            if modality == TEXT:
                out.append(towers.texts(chunk))
            else:
                spec = self.image_input
                out.append(towers.images(tower_input(square_batch(chunk, spec.size, spec.resize),
                                                     spec)))
        return np.concatenate(out)

    def towers(self) -> Any:
        """The loaded :class:`~plugins.clip_towers.towers.LoadedTowers` (loads on first use)."""
        return self._towers.get()

    def _load_towers(self) -> Any:
        from plugins.clip_towers.towers import LoadedTowers

        return LoadedTowers(self.text_handle, self.image_handle, self._dim)


def _positive(options: dict[str, Any], key: str) -> int | None:
    value = option_int(options, key)
    if value is not None and value <= 0:
        raise BadInput(f"{OWNER}: option {key!r} must be a positive integer, got {value}")
    return value
