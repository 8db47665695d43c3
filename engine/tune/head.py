"""The head of a tuned collection: a learned linear map from the encoder's space into its own.

A tuned collection keeps its exact-vector log in the base encoder's space (so `untune` and a
later re-tune never re-encode) while its index holds ``head(base)``. Everything that moves
vectors from the log into the index or into a score therefore reads through
:class:`MappedVectors`, and every query (text, image or ``vector=``) goes through the head of the
generation it searches. Applying the head is NumPy: serving never needs TensorFlow.

The map is ``normalize(x @ weight + bias)``, started at the identity so an untrained head is the
base space. A linear map keeps what the encoder knows about words it never saw in the user's
labels (a wider MLP measured no better on BANKING77 and overfits small label sets sooner).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import CorruptCollection
from engine.manifest import write_atomic

PREFIX = "tune-head-"


@dataclass(frozen=True)
class Head:
    weight: np.ndarray  # float32 [dim, dim]
    bias: np.ndarray  # float32 [dim]

    @classmethod
    def identity(cls, dim: int) -> Head:
        return cls(np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float32) @ self.weight + self.bias
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, weight=self.weight, bias=self.bias)
        return buffer.getvalue()

    @property
    def sha256(self) -> str:
        """Identifies the tuned space (in the manifest's fingerprint): the weights' own hash."""
        digest = hashlib.sha256(np.ascontiguousarray(self.weight, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.bias, np.float32).tobytes())
        return digest.hexdigest()

    def file_name(self) -> str:
        return f"{PREFIX}{self.sha256[:16]}.npz"

    def save(self, folder: Path) -> str:
        """Write the head beside the manifest (atomically); returns its file name."""
        name = self.file_name()
        write_atomic(folder / name, self.to_bytes())
        return name


def load_head(folder: Path, record: dict[str, Any]) -> Head:
    """The head a manifest's ``tune`` record names, checked against its hash."""
    path = folder / record["head"]
    try:
        with np.load(path) as data:
            head = Head(data["weight"].astype(np.float32), data["bias"].astype(np.float32))
    except FileNotFoundError:
        raise  # a writer may have replaced it since the manifest was read: the view retries
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptCollection(f"tune head {path.name} is unreadable ({exc})") from None
    if head.sha256 != record["sha256"]:
        raise CorruptCollection(
            f"tune head {path.name} is damaged (hash mismatch); untune the collection "
            f"(`hubsearch tune {folder.name} --reset`) and tune it again"
        )
    return head


class MappedVectors:
    """The exact-vector log read through a head: the vectors of the tuned space, by id.

    Shaped like :class:`engine.vectors.VectorFile` where indexes and rebuilds use it (``dim``,
    ``get``, ``get_checked``, ``checked``, ``release``, ``files``).
    """

    def __init__(self, source: Any, head: Head) -> None:
        self.source = source
        self.head = head
        self.dim = source.dim
        self.files = source.files

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self.head.apply(self.source.get(ids))

    def get_checked(self, ids: np.ndarray) -> np.ndarray:
        return self.head.apply(self.source.get_checked(ids))

    def checked(self) -> _CheckedMapped:
        return _CheckedMapped(self)

    def release(self) -> None:
        self.source.release()


class _CheckedMapped:
    def __init__(self, source: MappedVectors) -> None:
        self.source = source
        self.dim = source.dim

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self.source.get_checked(ids)


def through(vectors: Any, head: Head | None) -> Any:
    """``vectors`` as the index sees them: mapped by ``head``, or as stored without one."""
    return vectors if head is None else MappedVectors(vectors, head)
