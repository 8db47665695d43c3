"""The `hub` source: any TF Hub text embedder with a pinned handle, or a local SavedModel.

It accepts both shapes such models come in: a callable object (TF2 SavedModels, ours and the
official USE modules) or a ``serving_default`` signature returning a one-entry dict.
"""

from __future__ import annotations

import numpy as np

from engine.errors import PluginLoadError
from plugins.hub import load_handle


class HubModel:
    """Callable UTF-8 texts -> float32 ``[n, dim]`` through a loaded TF Hub handle."""

    def __init__(self, handle: str, dim: int) -> None:
        self.handle = handle
        self.dim = dim
        self._loaded = load_handle(handle, needs_text_ops=True)
        if callable(self._loaded):
            self._call = self._loaded
        elif "serving_default" in getattr(self._loaded, "signatures", {}):
            self._call = self._loaded.signatures["serving_default"]
        else:
            raise PluginLoadError(
                f"TF Hub handle {handle!r} is neither callable nor has a serving_default signature"
            )

    def __call__(self, texts: list[bytes]) -> np.ndarray:
        import tensorflow as tf

        out = self._call(tf.constant(texts, dtype=tf.string))
        if isinstance(out, dict):
            if len(out) != 1:
                raise PluginLoadError(
                    f"TF Hub handle {self.handle!r} returns several outputs ({', '.join(out)}); "
                    "expected one embedding tensor"
                )
            out = next(iter(out.values()))
        vectors = np.asarray(out, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise PluginLoadError(
                f"TF Hub handle {self.handle!r} gives vectors of shape {list(vectors.shape)}; "
                f"use-multilingual expects [n, {self.dim}]"
            )
        return vectors
