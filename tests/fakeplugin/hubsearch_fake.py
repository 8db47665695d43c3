"""A third-party-style test plugin: deterministic, fast encoders with no model behind them.

`fake-hash` embeds a text as a signed hashed bag of words and character trigrams, so texts
sharing words land close together (searches are meaningful) while encoding costs microseconds:
benchmarks of the engine measure the engine, not a model.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from engine.encoders import EncoderBase, option_int, option_str, reject_unknown_options


class HashEncoder(EncoderBase):
    name = "fake-hash"
    modalities = frozenset({"text"})
    batch_size = 1024

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, {"dim", "salt"}, "encoder 'fake-hash'")
        super().__init__(**options)
        self.dim = option_int(options, "dim", 64)
        self.salt = option_str(options, "salt", "")

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"model": "hashed-bag-of-words", "version": 1, "salt": self.salt}

    def _encode_batch(self, items: list[str], modality: str) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        salt = self.salt.encode()
        for row, text in enumerate(items):
            words = text.lower().split()
            grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
            for token, weight in [(w, 1.0) for w in words] + [(g, 0.3) for g in grams]:
                h = zlib.crc32(salt + token.encode("utf-8", "surrogatepass"))
                out[row, h % self.dim] += weight if (h >> 31) & 1 else -weight
        return out


class Broken:
    """Stands for a plugin whose import works but whose target is missing."""


def _boom() -> None:
    raise RuntimeError("fake plugin failed on purpose")
