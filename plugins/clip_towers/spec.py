"""The towers folder format: ``text/`` and ``image/`` SavedModels plus ``towers.json``.

A towers folder is the unit users move around: written by ``hubsearch towers train``, read by
the ``clip-towers`` encoder, loadable without hubsearch (``hub.load(DIR + "/text")``). The JSON
says what the SavedModels cannot say about themselves in a portable way: the shared width, how
images must be fed (size, resize rule, dtype and value range) and what text goes in. Reading it
needs no TensorFlow, so a collection can be opened and checked cheaply; mismatched widths are
refused here already when the JSON names them.

``towers.json``::

    {"format": "hubsearch-clip-towers", "version": 1, "dim": 256,
     "text":  {"path": "text", "input": "string", "dim": 256, "backbone": {...}},
     "image": {"path": "image", "input": "float32", "value_range": "0,1", "size": 224,
               "resize": "squash", "dim": 256, "backbone": {...}},
     "training": {...}}

``backbone`` and ``training`` are informational (what the towers were built from, and how);
everything else defines how the encoder feeds the towers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput

FORMAT = "hubsearch-clip-towers"
VERSION = 1
SPEC_FILE = "towers.json"
TEXT_DIR = "text"
IMAGE_DIR = "image"
#: What a text tower may take. Only raw strings: tokenisation belongs inside the SavedModel.
TEXT_INPUTS = ("string",)
#: ``float32`` in ``value_range`` (TF Hub's convention is "0,1"), or raw ``uint8`` pixels.
IMAGE_INPUTS = ("float32", "uint8")
VALUE_RANGES = ("0,1", "-1,1", "0,255")
#: ``squash``: the whole image resized to a square (nothing cut off, aspect not kept);
#: ``centre-crop``: the centre square of the short side, as classifiers are usually fed.
RESIZES = ("squash", "centre-crop")


@dataclass(frozen=True)
class ImageInput:
    """How pixels reach the image tower."""

    size: int = 224
    dtype: str = "float32"
    value_range: str = "0,1"
    resize: str = "squash"

    def __post_init__(self) -> None:
        if self.size < 8:
            raise BadInput(f"image size must be at least 8 pixels, got {self.size}")
        if self.dtype not in IMAGE_INPUTS:
            raise BadInput(f"image input must be one of {', '.join(IMAGE_INPUTS)}, "
                           f"got {self.dtype!r}")
        if self.value_range not in VALUE_RANGES:
            raise BadInput(f"image value range must be one of {', '.join(VALUE_RANGES)}, "
                           f"got {self.value_range!r}")
        if self.resize not in RESIZES:
            raise BadInput(f"image resize must be one of {', '.join(RESIZES)}, "
                           f"got {self.resize!r}")

    def describe(self) -> str:
        """What goes into the fingerprint: any change feeds the tower different numbers."""
        values = "uint8 0..255" if self.dtype == "uint8" else f"float32 in [{self.value_range}]"
        return f"{self.resize} to {self.size}x{self.size} RGB, {values}"


@dataclass(frozen=True)
class TowersSpec:
    """Everything ``towers.json`` says, validated."""

    dim: int
    image: ImageInput
    text_input: str = "string"
    text_dim: int | None = None
    image_dim: int | None = None
    backbones: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise BadInput(f"towers dim must be positive, got {self.dim}")
        if self.text_input not in TEXT_INPUTS:
            raise BadInput(f"text input {self.text_input!r} is not supported (the text tower "
                           "must take raw strings: string[N])")
        check_widths(self.text_dim or self.dim, self.image_dim or self.dim)
        if (self.text_dim or self.dim) != self.dim:
            raise BadInput(f"the towers give {self.text_dim}-d vectors but 'dim' says {self.dim}")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "text": {"path": TEXT_DIR, "input": self.text_input, "dim": self.dim,
                     "backbone": self.backbones.get("text", {})},
            "image": {"path": IMAGE_DIR, "input": self.image.dtype,
                      "value_range": self.image.value_range, "size": self.image.size,
                      "resize": self.image.resize, "dim": self.dim,
                      "backbone": self.backbones.get("image", {})},
            "training": self.training,
        }


def check_widths(text_dim: int, image_dim: int, where: str = "") -> None:
    """Towers that map into spaces of different widths cannot share one space."""
    if text_dim != image_dim:
        prefix = f"{where}: " if where else ""
        raise BadInput(f"{prefix}the text tower gives {text_dim}-d vectors but the image tower "
                       f"gives {image_dim}-d; both towers must map into one space of one width")


def read_spec(folder: str | os.PathLike[str]) -> TowersSpec:
    """Parse ``folder/towers.json``; every problem is a BadInput naming the file and field."""
    root = Path(folder)
    path = root / SPEC_FILE
    if not root.is_dir():
        raise BadInput(f"towers folder {str(root)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: missing; a towers folder holds text/, image/ and "
                       f"{SPEC_FILE}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path}: not a towers description (format must be {FORMAT!r})")
    if int(data.get("version", 0)) > VERSION:
        raise BadInput(f"{path}: version {data.get('version')} is newer than this hubsearch "
                       f"reads ({VERSION}); upgrade hubsearch")
    text, image = data.get("text") or {}, data.get("image") or {}
    try:
        dim = int(data["dim"])
        spec = TowersSpec(
            dim=dim,
            image=ImageInput(
                size=int(image["size"]),
                dtype=str(image.get("input", "float32")),
                value_range=str(image.get("value_range", "0,1")),
                resize=str(image.get("resize", "squash")),
            ),
            text_input=str(text.get("input", "string")),
            text_dim=int(text.get("dim", dim)),
            image_dim=int(image.get("dim", dim)),
            backbones={"text": text.get("backbone", {}), "image": image.get("backbone", {})},
            training=data.get("training", {}),
        )
    except KeyError as exc:
        raise BadInput(f"{path}: field {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{path}: {exc}") from None
    for sub in (TEXT_DIR, IMAGE_DIR):
        if not (root / sub / "saved_model.pb").is_file():
            raise BadInput(f"towers folder {str(root)!r}: {sub}/ is not a SavedModel "
                           "(no saved_model.pb)")
    return spec


def write_spec(folder: str | os.PathLike[str], spec: TowersSpec) -> Path:
    path = Path(folder) / SPEC_FILE
    path.write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
