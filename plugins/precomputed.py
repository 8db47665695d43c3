"""`precomputed`: for vectors made elsewhere. It encodes nothing and only fixes the width."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.encoders import EncoderBase, option_int, option_str, reject_unknown_options
from engine.errors import BadInput


class PrecomputedEncoder(EncoderBase):
    """A collection of caller-supplied vectors of width ``dim``.

    ``space`` names the embedding space (e.g. "openai-3-small"): collections and queries with
    different ``space`` labels never mix, which is the only protection when the model is not ours.
    """

    name = "precomputed"
    modalities = frozenset()

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, {"dim", "space"}, "encoder 'precomputed'")
        super().__init__(**options)
        dim = option_int(options, "dim")
        if dim is None or dim <= 0:
            raise BadInput("encoder 'precomputed' needs option dim, e.g. -o dim=512")
        self.dim = dim
        self.space = option_str(options, "space", "unnamed")

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"space": self.space}

    def _encode_batch(self, items: list[Any], modality: str) -> np.ndarray:  # pragma: no cover
        raise BadInput("encoder 'precomputed' encodes nothing: pass vectors= instead")
