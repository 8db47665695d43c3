"""The torch-free .pth reader: reads real state dicts, refuses pickles that name anything else."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from engine.errors import PluginLoadError
from plugins.efficientnet.sources import BundledSource
from plugins.efficientnet.torch_pickle import (
    LEGACY_MAGIC,
    UnsafePickle,
    load_state_dict,
    loads_state_dict,
)


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


def legacy_pth(state: dict, fake_torch: types.SimpleNamespace, payload: object = None) -> bytes:
    """A legacy torch file written the way torch.save(_use_new_zipfile_serialization=False) does.

    ``state`` maps names to (storage, offset, size, stride[, build]), where ``build`` is a state
    the pickle applies to the rebuilt tensor (BUILD opcode); ``payload`` replaces the state dict
    with any other object, for the attacks.
    """
    storages: dict[str, _Storage] = {}

    class Tensor:
        def __init__(self, storage, offset, size, stride, build=None):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())
            self.build = build
            storages[storage.key] = storage

        def __reduce__(self):
            if self.build is None:
                return fake_torch.rebuild, self.args
            return fake_torch.rebuild, self.args, self.build

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = {np.float32: fake_torch.FloatStorage, np.int64: fake_torch.LongStorage}
                return ("storage", kind[obj.data.dtype.type], obj.key, "cpu", obj.data.size, None)
            return None

    out = io.BytesIO()
    for record in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(record, out, protocol=2)
    body = collections.OrderedDict((k, Tensor(*v)) for k, v in state.items())
    Pickler(out, protocol=2).dump(body if payload is None else payload)
    pickle.dump(list(storages), out, protocol=2)
    for storage in storages.values():
        out.write(struct.pack("<q", storage.data.size) + storage.data.tobytes())
    return out.getvalue()


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Just enough of a `torch` module for pickle to name its globals; torch is not installed."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called by our reader
        raise AssertionError("the reader must not call torch")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, FloatStorage=torch.FloatStorage,
                                 LongStorage=torch.LongStorage)


def test_reads_the_bundled_lite0_weights_without_torch() -> None:
    state = load_state_dict(BundledSource.weights_path())
    assert "torch" not in sys.modules or not hasattr(sys.modules["torch"], "load")
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state.values())
    assert (state["_bn1.running_var"] > 0).all()


def test_tensors_with_offsets_and_strides_come_back_exactly(fake_torch) -> None:
    data = np.arange(24, dtype=np.float32)
    shared = _Storage("7", data)
    counts = _Storage("8", np.array([5], dtype=np.int64))
    state = {
        "matrix": (shared, 0, (4, 6), (6, 1)),
        "transposed": (shared, 0, (6, 4), (1, 6)),
        "tail": (shared, 20, (4,), (1,)),
        "scalar": (counts, 0, (), ()),
    }
    out = loads_state_dict(legacy_pth(state, fake_torch))
    assert np.array_equal(out["matrix"], data.reshape(4, 6))
    assert np.array_equal(out["transposed"], data.reshape(4, 6).T)
    assert np.array_equal(out["tail"], data[20:])
    assert out["scalar"] == 5 and out["scalar"].dtype == np.int64


class _Attack:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "attack",
    [
        _Attack(os.system, "touch {marker}"),
        _Attack(eval, "open({marker!r}, 'w').write('pwned')"),
        _Attack(exec, "open({marker!r}, 'w').write('pwned')"),
        _Attack(getattr, "text", "upper"),
        _Attack(Path.write_text, Path("{marker}"), "pwned"),
        _Attack(np.save, "{marker}", np.zeros(1)),
        _Attack(collections.namedtuple, "T", "a"),
    ],
    ids=["os.system", "builtins.eval", "builtins.exec", "builtins.getattr", "pathlib",
         "numpy.save", "collections.namedtuple"],
)
def test_a_pickle_naming_any_other_callable_is_refused_before_it_runs(
    tmp_path: Path, fake_torch, attack: _Attack
) -> None:
    marker = tmp_path / "marker"
    attack.args = tuple(
        type(a)(str(a).format(marker=str(marker))) if isinstance(a, (str, Path)) else a
        for a in attack.args
    )
    payloads = {
        "as the state dict": legacy_pth({}, fake_torch, payload=attack),
        "inside a tensor dict": legacy_pth({}, fake_torch, payload={"w": attack}),
        "as the magic number": pickle.dumps(attack, protocol=2),
    }
    for where, data in payloads.items():
        path = tmp_path / "evil.pth"
        path.write_bytes(data)
        with pytest.raises(UnsafePickle, match="refused to load") as caught:
            load_state_dict(path)
        assert isinstance(caught.value, PluginLoadError), where
        assert not marker.exists(), f"payload ran ({where})"


def test_a_storage_type_cannot_be_called_to_smuggle_work(fake_torch) -> None:
    class CallsStorage:
        def __reduce__(self):
            return fake_torch.FloatStorage, ("x",)

    with pytest.raises(PluginLoadError):
        loads_state_dict(legacy_pth({}, fake_torch, payload={"w": CallsStorage()}))


def test_damaged_files_are_plugin_load_errors(tmp_path: Path, fake_torch) -> None:
    good = legacy_pth({"w": (_Storage("1", np.ones(6, np.float32)), 0, (6,), (1,))}, fake_torch)
    cases = {
        "truncated.pth": good[:-8],
        "garbage.pth": b"\x80\x02not a pickle at all",
        "zip.pth": b"PK\x03\x04" + b"\0" * 40,
        "empty.pth": b"",
        "overrun.pth": legacy_pth(
            {"w": (_Storage("1", np.ones(6, np.float32)), 4, (6,), (1,))}, fake_torch
        ),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PluginLoadError, match=name):
            load_state_dict(tmp_path / name)


def _assert_bundled_weights_still_load() -> None:
    state = load_state_dict(BundledSource.weights_path())
    assert len(state) == 296 and state["_fc.weight"].dtype == np.float32


@pytest.mark.parametrize(
    ("size", "stride", "numel"),
    [
        ((1024, 1024), (0, 0), 1),  # every element is the one float: 4 MiB from 4 bytes
        ((1 << 40,), (0,), 1),  # used to be a bare MemoryError
        ((4, 4), (1, 1), 7),  # overlapping rows: in bounds, yet more elements than stored
        ((3, 3), (3, 1), 8),  # the last element lies past the storage
    ],
    ids=["zero-strides", "zero-stride-huge", "overlapping-strides", "past-the-end"],
)
def test_shapes_the_storage_cannot_back_are_refused(
    tmp_path: Path, fake_torch, size, stride, numel
) -> None:
    """A few hundred bytes must not expand into an array larger than the storage it came with."""
    storage = _Storage("1", np.ones(numel, np.float32))
    path = tmp_path / "strided.pth"
    path.write_bytes(legacy_pth({"w": (storage, 0, size, stride)}, fake_torch))
    assert path.stat().st_size < 400
    with pytest.raises(PluginLoadError, match=r"strided\.pth: .*not backed by storage 1"):
        load_state_dict(path)
    _assert_bundled_weights_still_load()


def _legacy_file(body: bytes) -> bytes:
    """A legacy torch file whose state-dict record is the raw pickle ``body``."""
    head = LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}
    return b"".join(pickle.dumps(r, protocol=2) for r in head) + body + pickle.dumps([], 2)


def _build_on_global(module: str, name: str, state: object) -> bytes:
    """GLOBAL module.name, then BUILD with ``state`` on it, then an empty state dict."""
    state_ops = pickle.dumps(state, protocol=2)[2:-1]  # without PROTO and STOP
    return _legacy_file(b"\x80\x02c" + f"{module}\n{name}\n".encode() + state_ops + b"b0}.")


@pytest.mark.parametrize(
    ("module", "name", "state"),
    [
        ("torch", "FloatStorage", {"dtype": "i1"}),
        ("torch", "LongStorage", (None, {"dtype": "u1"})),
        ("torch._utils", "_rebuild_tensor_v2", (None, {"__defaults__": (True, None)})),
        ("torch._utils", "_rebuild_tensor_v2", {"poisoned": True}),
        ("collections", "OrderedDict", {"poisoned": True}),
    ],
    ids=["FloatStorage-dict", "LongStorage-slots", "rebuild-defaults", "rebuild-dict",
         "OrderedDict-class"],
)
def test_build_cannot_change_the_shared_stand_ins(
    tmp_path: Path, module: str, name: str, state: object
) -> None:
    """Once, a 60-byte file made the bundled weights unreadable until the process restarted."""
    path = tmp_path / "build.pth"
    path.write_bytes(_build_on_global(module, name, state))
    with pytest.raises(PluginLoadError, match=r"build\.pth: "):
        load_state_dict(path)
    _assert_bundled_weights_still_load()


def test_build_cannot_rewrite_a_checked_tensor(tmp_path: Path, fake_torch) -> None:
    """BUILD on a rebuilt tensor would swap in geometry that never went through the checks."""
    storage = _Storage("1", np.ones(1, np.float32))
    bomb = {"shape": (1 << 40,), "stride": (0,)}
    path = tmp_path / "rebuilt.pth"
    path.write_bytes(legacy_pth({"w": (storage, 0, (1,), (1,), bomb)}, fake_torch))
    with pytest.raises(UnsafePickle, match=r"rebuilt\.pth: refused to load.*BUILD"):
        load_state_dict(path)
