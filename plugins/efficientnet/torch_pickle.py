"""Reading a PyTorch state dict without PyTorch, and without trusting the file.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. The bundled
EfficientNet-Lite0 weights come in the legacy (pre-zip) torch format, so we read it with an
unpickler that resolves exactly the few globals a tensor state dict needs, to harmless stand-ins
of our own, and refuses every other global before anything is called. The tensors come back as
numpy arrays; torch is never imported.

Legacy layout, five records in a row: a pickled magic number, a protocol version, a system-info
dict, the pickled object (tensors refer to storages by persistent id), a pickled list of storage
keys; then, for each key in that order, an int64 element count and the raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from engine.errors import PluginLoadError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LONG = struct.Struct("<q")


class UnsafePickle(PluginLoadError):
    """The file names a global that a tensor state dict never needs: it was not loaded."""


class _Sealed:
    """Refuses pickle's BUILD opcode, which would otherwise rewrite the object's ``__dict__``.

    The stand-ins the unpickler hands out are shared by every load in the process, and the refs
    it creates were validated when made: a BUILD on either would let one file poison later
    loads or smuggle in geometry that skipped the checks. The unpickler calls ``__setstate__``
    instead of touching ``__dict__`` whenever it exists, so this is where BUILD ends. Only
    ``OrderedDict`` instances (torch's ``_metadata``) may still be built.
    """

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickle(
            f"refused to load: the pickle tries to change the state of {type(self).__name__} "
            "(BUILD), which a tensor state dict never does"
        )


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stands in for ``torch.FloatStorage`` & co.: only a dtype, never called."""

    torch_name: str
    dtype: np.dtype


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dtype))
    for name, dtype in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


@dataclass(frozen=True)
class _StorageRef(_Sealed):
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef(_Sealed):
    """A tensor whose bytes come after the pickle; materialised once they are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _RebuildTensor(_Sealed):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor lives.

    An instance, not a function, so that BUILD cannot rewrite its ``__defaults__`` or
    ``__dict__`` for every later load.
    """

    def __call__(self, storage, offset, size, stride, requires_grad=False, hooks=None, *_):
        if not isinstance(storage, _StorageRef):
            raise UnsafePickle("tensor rebuilt from something that is not a storage")
        try:
            offset = int(offset)
            shape, strides = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        except (TypeError, ValueError, OverflowError):
            raise PluginLoadError(
                f"tensor with invalid geometry size={size!r:.80} stride={stride!r:.80}"
            ) from None
        _check_geometry(storage, offset, shape, strides)
        return _TensorRef(storage, offset, shape, strides)


def _check_geometry(storage: _StorageRef, offset: int, shape: tuple, strides: tuple) -> None:
    """Refuses a tensor its storage cannot back, before any byte of it is read.

    Every element the shape, strides and offset reach must lie inside the storage, and the
    tensor may not hold more elements than the storage does: with zero (or overlapping) strides
    a 245-byte file could otherwise ask for a gigabyte-sized copy of one float.
    """
    what = f"tensor size={list(shape)} stride={list(strides)} offset={offset}"
    if len(shape) != len(strides) or min((*shape, *strides, offset), default=0) < 0:
        raise UnsafePickle(f"{what}: invalid geometry")
    count = 1
    for n in shape:
        count *= n
    if count == 0:
        return
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    if last >= storage.numel or count > storage.numel:
        raise PluginLoadError(
            f"{what} is not backed by storage {storage.key} of {storage.numel} elements"
        )


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
    }
    for name, storage_type in _STORAGE_TYPES.items():
        allowed[("torch", name)] = storage_type
    return allowed


_ALLOWED = _allowed_globals()


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; every other one raises before it is used."""

    def __init__(self, file: BinaryIO, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file)
        self.storages = storages if storages is not None else {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(
                f"refused to load: the pickle references {module}.{name}, which a tensor state "
                "dict never needs (a pickle can run code; only torch tensor and storage "
                "classes and collections.OrderedDict are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafePickle(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise UnsafePickle(f"malformed storage reference {pid!r:.80}")
        if view is not None:
            raise UnsafePickle("storage views are not supported")
        key = str(key)
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            raise UnsafePickle(f"storage {key} is declared twice with different types or sizes")
        return ref


def _load_record(f: BinaryIO, unpickler: _StateDictUnpickler | None = None) -> Any:
    return (unpickler or _StateDictUnpickler(f)).load()


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Tensors of a legacy torch ``.pth`` state dict as numpy arrays, keyed by parameter name.

    Raises :class:`UnsafePickle` for a file that names any other global, and
    :class:`~engine.errors.PluginLoadError` for a file that is not such a state dict; both
    messages start with the path.
    """
    try:
        with open(path, "rb") as f:
            return _read_named(f, os.fspath(path))
    except OSError as exc:
        raise PluginLoadError(f"{os.fspath(path)}: cannot read weights ({exc})") from exc


def loads_state_dict(data: bytes, name: str = "<bytes>") -> dict[str, np.ndarray]:
    """:func:`load_state_dict` for bytes already in memory."""
    return _read_named(io.BytesIO(data), name)


def _read_named(f: BinaryIO, name: str) -> dict[str, np.ndarray]:
    try:
        return _read(f)
    except UnsafePickle as exc:
        raise UnsafePickle(f"{name}: {exc}") from None
    except PluginLoadError as exc:
        raise PluginLoadError(f"{name}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error) as exc:
        raise PluginLoadError(f"{name}: not a readable torch state dict ({exc})") from exc


def _read(f: BinaryIO) -> dict[str, np.ndarray]:
    if f.read(2) == b"PK":
        raise PluginLoadError("zip-format torch files are not supported; re-save it legacy-style")
    f.seek(0)
    if _load_record(f) != LEGACY_MAGIC:
        raise PluginLoadError("not a legacy torch file (bad magic number)")
    if _load_record(f) != 1001:
        raise PluginLoadError("unsupported torch file protocol version")
    sys_info = _load_record(f)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise PluginLoadError("only little-endian torch files are supported")
    unpickler = _StateDictUnpickler(f)
    state = unpickler.load()
    keys = _load_record(f)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise PluginLoadError("the pickle holds no state dict (expected names -> tensors)")
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(unpickler.storages):
        raise PluginLoadError("storage key list does not match the tensors' storages")
    data = {str(key): _read_storage(f, unpickler.storages[str(key)]) for key in keys}
    return {
        name: _materialise(ref, data[ref.storage.key])
        for name, ref in state.items()
        if isinstance(ref, _TensorRef)
    }


def _read_storage(f: BinaryIO, ref: _StorageRef) -> np.ndarray:
    (numel,) = _LONG.unpack(f.read(_LONG.size))
    if numel != ref.numel:
        raise PluginLoadError(f"storage {ref.key}: {numel} elements on disk, {ref.numel} declared")
    nbytes = numel * ref.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise PluginLoadError(f"storage {ref.key}: file is truncated")
    return np.frombuffer(raw, dtype=ref.dtype)


def _materialise(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """A copy of the tensor; its geometry was checked against the storage when it was rebuilt."""
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype=storage.dtype)
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * item for s in ref.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))
