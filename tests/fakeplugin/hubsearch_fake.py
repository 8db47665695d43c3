"""A third-party-style test plugin: a deterministic, fast encoder with no model behind it.

`fake-hash` embeds a text as a signed hashed bag of words, so texts sharing words land close
together (searches are meaningful) while encoding costs about a microsecond a word: benchmarks
of the engine measure the engine, not a model.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from engine.encoders import EncoderBase, option_int, option_str, reject_unknown_options
from engine.errors import PluginLoadError


class HashEncoder(EncoderBase):
    name = "fake-hash"
    modalities = frozenset({"text"})
    batch_size = 1024

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, {"dim", "salt"}, "encoder 'fake-hash'")
        super().__init__(**options)
        self.dim = option_int(options, "dim", 64)
        self.salt = option_str(options, "salt", "")
        self._slots: dict[str, tuple[int, float]] = {}

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"model": "hashed-bag-of-words", "version": 2, "salt": self.salt}

    def _slot(self, word: str) -> tuple[int, float]:
        slot = self._slots.get(word)
        if slot is None:
            h = zlib.crc32((self.salt + word).encode("utf-8", "surrogatepass"))
            slot = self._slots[word] = (h % self.dim, 1.0 if (h >> 31) & 1 else -1.0)
        return slot

    def _encode_batch(self, items: list[str], modality: str) -> np.ndarray:
        _test_faults()
        rows, cols, signs = [], [], []
        for row, text in enumerate(items):
            for word in text.lower().split():
                col, sign = self._slot(word)
                rows.append(row)
                cols.append(col)
                signs.append(sign)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        np.add.at(out, (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)), signs)
        return out


class PixelEncoder(EncoderBase):
    """`fake-pixels`: an image as its mean colour per quadrant (12-d), so images of the same
    colours are neighbours; for tests of image paths (uploads, decoding) without a model."""

    name = "fake-pixels"
    modalities = frozenset({"image"})

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, set(), "encoder 'fake-pixels'")
        super().__init__(**options)
        self.dim = 12

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"model": "quadrant-mean-colour", "version": 1}

    def _encode_batch(self, items: list[np.ndarray], modality: str) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, image in enumerate(items):
            h, w = image.shape[0] // 2 or 1, image.shape[1] // 2 or 1
            quads = [image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]]
            out[row] = np.concatenate([q.reshape(-1, 3).mean(0) if q.size else 0 for q in quads])
        return out + 1.0  # never all-zero


class FolderEncoder(HashEncoder):
    """`fake-hash` salted by ``<folder>/salt.txt``: an encoder that loads a file from disk,
    as a SavedModel ``handle=`` does, to test that cluster actors get it shipped."""

    name = "fake-folder"
    external_options = frozenset({"folder"})

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(options, {"dim", "folder"}, "encoder 'fake-folder'")
        folder = Path(option_str(options, "folder", "") or ".").resolve()
        forbidden = os.environ.get("HUBSEARCH_FAKE_FORBID")
        if forbidden and str(folder).startswith(forbidden):
            raise PluginLoadError(f"fake-folder: {folder} is the driver's disk, not readable here")
        salt = (folder / "salt.txt").read_text()
        super().__init__(dim=option_int(options, "dim", 64), salt=salt)
        self._options = {"dim": self.dim, "folder": str(folder)}


_calls = 0


def _test_faults() -> None:
    """Faults the Ray tests inject into encoder actors through their environment.

    HUBSEARCH_FAKE_SLOW: seconds each batch takes. HUBSEARCH_FAKE_CRASH: a file holding N;
    the first process to reach its N-th batch renames it away and dies (one crash only).
    """
    global _calls
    _calls += 1
    slow = os.environ.get("HUBSEARCH_FAKE_SLOW")
    if slow:
        import time

        time.sleep(float(slow))
    arm = os.environ.get("HUBSEARCH_FAKE_CRASH")
    if arm and os.path.exists(arm):
        try:
            after = int(Path(arm).read_text())
        except (OSError, ValueError):
            return
        if _calls >= after:
            try:
                os.rename(arm, arm + ".fired")
            except OSError:
                return
            os._exit(1)
