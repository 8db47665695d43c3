"""The encoder of a stage-2 tuned collection: the base encoder with its top trained (`--full`).

A `tune --full` changes the encoder itself, so unlike a head it cannot be applied to stored base
vectors: the collection keeps a second exact-vector log, ``tuned/``, holding every document as
the tuned encoder gives it (the base log stays, so `untune` needs no re-encoding). The tuned top
weights are a file in the collection folder named by their hash, and the manifest's ``tune``
record names both; its fingerprint covers the weights through ``tune["encoder"]["sha256"]``.

Queries and documents added later go through :class:`TunedEncoder`: the plugin's frozen bottom,
then its top over the tuned weights (one TensorFlow call per batch), then the head.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.encoders import (
    TEXT,
    Lazy,
    Trainable,
    check_modality,
    l2_normalise,
    validate_texts,
)
from engine.errors import BadInput, CorruptCollection
from engine.manifest import Manifest, VectorFiles, write_atomic

PREFIX = "tune-encoder-"
#: The tuned encoder's exact vectors, beside ``vectors/`` (same layout, own epochs).
TUNED_DIR = "tuned"


def weights_sha256(weights: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(weights[key], np.float32).tobytes())
    return digest.hexdigest()


def save_weights(folder: Path, weights: dict[str, np.ndarray]) -> dict[str, str]:
    """Write the tuned top beside the manifest (atomically); returns its manifest record."""
    sha = weights_sha256(weights)
    name = f"{PREFIX}{sha[:16]}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    write_atomic(folder / name, buffer.getvalue())
    return {"file": name, "sha256": sha}


def load_weights(folder: Path, record: dict[str, Any]) -> dict[str, np.ndarray]:
    path = folder / record["file"]
    try:
        with np.load(path) as data:
            weights = {k: data[k].astype(np.float32) for k in data.files}
    except FileNotFoundError:
        raise  # replaced by a writer since the manifest was read: the view retries
    except (OSError, ValueError) as exc:
        raise CorruptCollection(
            f"tuned encoder weights {path.name} are unreadable ({exc})"
        ) from None
    if weights_sha256(weights) != record["sha256"]:
        raise CorruptCollection(
            f"tuned encoder weights {path.name} are damaged (hash mismatch); untune the "
            f"collection (`hubsearch tune {folder.name} --reset`) and tune it again"
        )
    return weights


def tuned_files(manifest: Manifest) -> VectorFiles | None:
    """The tuned log a stage-2 generation reads, None for the base space or a head alone."""
    record = (manifest.tune or {}).get("vectors")
    return None if record is None else VectorFiles(**record)


def trainable(encoder: Any, name: str) -> Trainable:
    """``encoder`` as a :class:`Trainable`, or a one-line BadInput saying why it cannot train."""
    if TEXT not in encoder.modalities:
        raise BadInput(
            f"--full fine-tunes a text encoder, and collection {name!r}'s encoder "
            f"{encoder.name!r} does not encode text; tune without --full (a head on its "
            f"stored vectors works for every encoder)"
        )
    if not isinstance(encoder, Trainable):
        raise BadInput(
            f"encoder {encoder.name!r} cannot be fine-tuned (--full trains `use-multilingual` "
            f"with source=bundled); tune collection {name!r} without --full"
        )
    reason = encoder.cannot_train()
    if reason:
        raise BadInput(f"{reason}; tune collection {name!r} without --full")
    return encoder


class TunedEncoder:
    """The base encoder with tuned top weights, shaped like an :class:`~engine.encoders.Encoder`."""

    def __init__(self, base: Trainable, weights: dict[str, np.ndarray], sha256: str) -> None:
        self.base = base
        self.weights = weights
        self.sha256 = sha256
        self.name = base.name  # type: ignore[attr-defined]
        self.modalities = frozenset({TEXT})
        self.dim = base.dim  # type: ignore[attr-defined]
        self.batch_size = base.batch_size  # type: ignore[attr-defined]
        self._tf: Lazy[dict[str, Any]] = Lazy(self._to_tensors)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {**self.base.fingerprint, "tuned_top": self.sha256}  # type: ignore[attr-defined]

    @property
    def options(self) -> dict[str, Any]:
        return self.base.options  # type: ignore[attr-defined]

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        check_modality(self, modality)
        texts = validate_texts(items)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.from_features(self.base.frozen_features(texts))

    def from_features(self, features: np.ndarray) -> np.ndarray:
        """Vectors for features of the frozen bottom (the re-encode reuses cached ones)."""
        return l2_normalise(np.asarray(self.base.top(self._constants(), features)))

    def _constants(self) -> dict[str, Any]:
        return self._tf.get()

    def _to_tensors(self) -> dict[str, Any]:
        import tensorflow as tf

        return {k: tf.constant(v) for k, v in self.weights.items()}
