"""Loading a pair of towers (TF Hub handles or SavedModel folders) and calling them in batches.

Either tower may be any TF2 SavedModel or TF Hub module that is callable on one batch, or that
has a ``serving_default`` signature with one output: CLIP-style models exported elsewhere load
the same way as towers we trained. Widths are read from the saved signatures (nothing is run
to find them) and towers that disagree are refused before a single vector is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import BadInput, PluginLoadError
from plugins.clip_towers.spec import check_widths
from plugins.hub import load_handle


class LoadedTowers:
    """The two loaded towers: ``texts(list[str])`` and ``images(batch)`` -> float32 rows."""

    def __init__(self, text_handle: str, image_handle: str, dim: int | None = None) -> None:
        self.text_handle, self.image_handle = text_handle, image_handle
        self._text = _entry(load_handle(text_handle, needs_text_ops=True), text_handle)
        self._image = _entry(load_handle(image_handle), image_handle)
        self.text_dim = output_width(self._text)
        self.image_dim = output_width(self._image)
        if self.text_dim is not None and self.image_dim is not None:
            check_widths(self.text_dim, self.image_dim, f"towers {text_handle} + {image_handle}")
        self.dim = dim if dim is not None else (self.text_dim or self.image_dim)
        for width, which in ((self.text_dim, "text"), (self.image_dim, "image")):
            if width is not None and self.dim is not None and width != self.dim:
                raise BadInput(f"the {which} tower gives {width}-d vectors but the towers are "
                               f"declared {self.dim}-d (towers.json 'dim' or option 'dim')")

    def texts(self, texts: list[str]) -> np.ndarray:
        import tensorflow as tf

        return self._check(_call(self._text, tf.constant(texts, dtype=tf.string)), "text")

    def images(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._check(_call(self._image, tf.constant(batch)), "image")

    def _check(self, out: np.ndarray, which: str) -> np.ndarray:
        if out.ndim != 2:
            raise PluginLoadError(f"the {which} tower returns shape {list(out.shape)}; "
                                  "expected [batch, width]")
        if self.dim is None:
            self.dim = out.shape[1]
        if out.shape[1] != self.dim:
            raise BadInput(f"the {which} tower gives {out.shape[1]}-d vectors, the other tower "
                           f"{self.dim}-d; both towers must map into one space of one width")
        return out


def _entry(loaded: Any, handle: str) -> Any:
    """The callable to run: the object itself, else its ``serving_default`` signature."""
    if callable(loaded):
        return loaded
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" in signatures:
        return signatures["serving_default"]
    raise PluginLoadError(f"tower {handle!r} is neither callable nor has a serving_default "
                          "signature")


def _call(function: Callable[[Any], Any], inputs: Any) -> np.ndarray:
    out = function(inputs)
    if isinstance(out, dict):
        if len(out) != 1:
            raise PluginLoadError(f"a tower returns several outputs ({', '.join(sorted(out))}); "
                                  "expected one embedding tensor")
        out = next(iter(out.values()))
    return np.asarray(out, dtype=np.float32)


def output_width(entry: Any) -> int | None:
    """Width of a tower's ``[batch, width]`` output from its saved signatures, if static."""
    outputs = []
    if hasattr(entry, "structured_outputs"):  # a concrete (signature) function
        outputs.append(entry.structured_outputs)
    outputs += [fn.structured_outputs for fn in getattr(entry, "concrete_functions", ())]
    call = entry.__call__ if callable(entry) else None
    outputs += [fn.structured_outputs for fn in getattr(call, "concrete_functions", ())]
    for out in outputs:
        if isinstance(out, dict) and len(out) == 1:
            out = next(iter(out.values()))
        shape = getattr(out, "shape", None)
        if shape is not None and shape.rank == 2 and shape[-1] is not None:
            return int(shape[-1])
    return None
