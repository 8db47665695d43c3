"""The encoder contract: what every encoder plugin promises the engine.

An encoder maps items of one modality ("text" or "image") to float32 rows of width ``dim``, L2
normalised, in one embedding space identified by ``fingerprint``. The engine owns batching,
progress and storage; a plugin owns one model. Plugins subclass :class:`EncoderBase`, which
validates items, checks the modality and normalises once for all of them, leaving a single
abstract method, :meth:`EncoderBase._encode_batch`.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from engine.errors import BadInput
from engine.limits import check_text_size

# Option parsing lives in engine.options, which index kinds share; encoder plugins have always
# imported it from here, so it stays importable from here.
from engine.options import option_bool as option_bool
from engine.options import option_float as option_float
from engine.options import option_int as option_int
from engine.options import option_str as option_str
from engine.options import reject_unknown_options as reject_unknown_options

TEXT = "text"
IMAGE = "image"
MODALITIES = (TEXT, IMAGE)
T = TypeVar("T")
_F32 = np.finfo(np.float32)


@runtime_checkable
class Encoder(Protocol):
    """What the engine needs from an encoder. :class:`EncoderBase` implements it."""

    name: str
    modalities: frozenset[str]
    dim: int
    batch_size: int

    @property
    def fingerprint(self) -> dict[str, Any]: ...

    @property
    def options(self) -> dict[str, Any]: ...

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray: ...


@runtime_checkable
class Trainable(Protocol):
    """An encoder whose top layers `tune --full` may train (engine/tune/full.py).

    The encoder splits itself in two: a frozen bottom run once per text
    (:meth:`frozen_features`) and a small differentiable top (:meth:`top`, TensorFlow) over
    named weights (:meth:`top_weights`). Training then runs only the top over cached features,
    which is what fits stage 2 into minutes on a CPU; the engine keeps the tuned weights in the
    collection folder and encodes through them. An encoder without these methods cannot train.
    """

    def cannot_train(self) -> str | None:
        """None when this instance can train; otherwise why not, in one line."""

    def frozen_features(self, texts: list[str]) -> np.ndarray:
        """float32 ``[n, F]``: what the frozen bottom gives for ``texts``."""

    def top_weights(self) -> dict[str, np.ndarray]:
        """The base weights of the trainable top, by name."""

    def top(self, weights: Any, features: Any) -> Any:
        """TensorFlow: features ``[n, F]`` through ``weights`` -> unit vectors ``[n, dim]``."""

    def text_module(self, weights: dict[str, np.ndarray] | None = None) -> Any:
        """A ``tf.Module`` callable ``string[N] -> float32[N, dim]`` through ``weights`` (the
        base ones when None), for SavedModel export."""


class EncoderBase(ABC):
    """Shared behaviour of every encoder plugin.

    Subclasses set ``name`` and ``modalities``, set ``self.dim`` in ``__init__`` (without loading
    the model: construction must stay cheap because opening a collection builds its encoder to
    check the fingerprint), implement :meth:`_fingerprint_fields` and :meth:`_encode_batch`, and
    load their model lazily on the first encode.
    """

    name: ClassVar[str] = ""
    modalities: ClassVar[frozenset[str]] = frozenset()
    #: Items per model call the engine should use unless the user says otherwise.
    batch_size: int = 64
    #: Options that name a model or file the encoder loads and runs (a TF Hub handle, a
    #: SavedModel folder, a weights file). A model is code: a SavedModel graph can read and
    #: write files. `hubsearch info` lists these so users see what a collection trusts.
    external_options: ClassVar[frozenset[str]] = frozenset()
    #: Whether encoding imports TensorFlow. The CLI then imports it first, before the command
    #: prints anything, because TensorFlow's start-up lines can be silenced no other way.
    uses_tensorflow: ClassVar[bool] = False
    dim: int

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)

    @property
    def options(self) -> dict[str, Any]:
        """The options this encoder was built with, as stored in a collection's manifest."""
        return dict(self._options)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Identifies the embedding space: equal fingerprints mean comparable vectors."""
        fields = {"encoder": self.name, "dim": int(self.dim)}
        fields.update(self._fingerprint_fields())
        # Round-trip through JSON so the value compares equal to what a manifest stores.
        return json.loads(json.dumps(fields, sort_keys=True))

    @abstractmethod
    def _fingerprint_fields(self) -> dict[str, Any]:
        """Model id and version, weight source and hash, preprocessing: what defines the space."""

    @abstractmethod
    def _encode_batch(self, items: list[Any], modality: str) -> np.ndarray:
        """Encode already validated items of one modality into a ``[n, dim]`` array.

        Text items are ``str``. Image items are ``uint8`` arrays ``[height, width, 3]`` (RGB) of
        any size; resizing and value scaling are the plugin's preprocessing.
        """

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        """Encode ``items`` into float32 ``[n, dim]`` with L2-normalised rows."""
        check_modality(self, modality)
        if modality == TEXT:
            prepared: list[Any] = validate_texts(items)
        else:
            from engine.images import decode_min_side

            prepared = validate_images(items, decode_min_side(self))
        if not prepared:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._encode_batch(prepared, modality), dtype=np.float32)
        if vectors.shape != (len(prepared), self.dim):
            raise RuntimeError(
                f"encoder {self.name!r} returned shape {vectors.shape}, "
                f"expected ({len(prepared)}, {self.dim})"
            )
        return l2_normalise(vectors)


def check_modality(encoder: Encoder, modality: str) -> None:
    if modality not in encoder.modalities:
        takes = ", ".join(sorted(encoder.modalities)) or "precomputed vectors only"
        raise BadInput(f"encoder {encoder.name!r} does not encode {modality} (it takes: {takes})")


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # Row norms without an [n, dim] temporary: np.linalg.norm squares a full copy first,
    # 200 MB at the peak of a 100,000 x 512 add. Accumulated in float64, so no overflow.
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))[:, None]
    if len(norms) and np.abs(norms - 1.0).max() < 1e-6:
        return vectors  # already unit length: no second copy of a large batch
    # A norm past float32's range (finite rows of values near 3e38) became inf and the row
    # zero; one below its normal range lost precision. Those rows divide in float64 instead.
    plain = (norms >= _F32.tiny) & (norms <= _F32.max)
    out = vectors / np.where(plain, norms, 1.0).astype(np.float32)
    odd = np.flatnonzero(~plain[:, 0] & (norms[:, 0] > 0))
    if len(odd):
        out[odd] = (vectors[odd].astype(np.float64) / norms[odd]).astype(np.float32)
    return out


def validate_texts(items: Sequence[Any]) -> list[str]:
    """Texts as ``str``; UTF-8 bytes are decoded, anything else is a :class:`BadInput`."""
    if isinstance(items, (str, bytes)):
        raise BadInput("texts must be a list of strings, not a single string")
    texts: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadInput(f"text item {i}: not valid Unicode ({exc.reason})") from None
            check_text_size(item, f"text item {i}")
            texts.append(item)
        elif isinstance(item, (bytes, bytearray)):
            check_text_size(item, f"text item {i}")
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BadInput(f"text item {i}: bytes are not valid UTF-8 ({exc.reason})") from None
        else:
            raise BadInput(f"text item {i}: expected a string, got {type(item).__name__}")
    return texts


def validate_images(items: Sequence[Any], min_side: int | None = None) -> list[np.ndarray]:
    """Images as RGB ``uint8 [h, w, 3]`` arrays; paths and bytes are decoded first.

    ``min_side`` must be what ingestion decodes with, so a stored image and the same image
    given as a query yield the same vector.
    """
    from engine.images import as_rgb_array  # deferred: Pillow is only needed for images

    return [
        as_rgb_array(item, label=f"image item {i}", min_side=min_side)
        for i, item in enumerate(items)
    ]


def validate_vectors(vectors: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """Caller-supplied vectors as contiguous float32 ``[n, dim]``, L2-normalised, finite."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what}: not a numeric array ({exc})") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise BadInput(f"{what}: expected shape [n, {dim}], got {list(array.shape)}")
    # A NaN or infinity anywhere makes the row's float64 sum non-finite (finite float32 values
    # cannot overflow it); no [n, dim] boolean temporary.
    bad = ~np.isfinite(array.sum(axis=1, dtype=np.float64))
    if bad.any():
        raise BadInput(f"{what}: row {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    return l2_normalise(array)


class Lazy(Generic[T]):
    """A model built on first use, exactly once even when request threads ask at the same time.

    Loading twice would double a model's memory and, worse, let two threads see different
    instances; holding the lock after the load would serialise every encode. Shared by the
    plugins, so each of them loads lazily the same way.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    @property
    def loaded(self) -> bool:
        return self._value is not None
