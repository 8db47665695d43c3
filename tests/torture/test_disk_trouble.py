"""Damaged files: open refuses them with CorruptCollection, repair rebuilds what it can."""

from __future__ import annotations

import numpy as np
import pytest
from handles import reopen

from engine import CorruptCollection

TEXTS = [
    f"support article {i} about {w}"
    for i, w in enumerate(["cards", "fees", "transfers", "refunds", "limits", "cash", "pins"] * 30)
]


@pytest.fixture
def col(engine):
    col = engine.create("kb", encoder="fake-hash", options={"dim": 64})
    col.add(
        texts=TEXTS,
        ids=[f"a{i}" for i in range(len(TEXTS))],
        metadata=[{"n": i} for i in range(len(TEXTS))],
    )
    col.checkpoint()
    return col


def answers(col):
    return [
        [(h.id, round(h.score, 5)) for h in col.search(q, k=5)]
        for q in ("cards", "refunds article 7", "cash limits")
    ]


def snapshot(col):
    return col.folder / f"index-{col.manifest.snapshot_generation}.faiss"


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_index_is_refused_then_repaired(engine, col, damage):
    expected = answers(col)
    path = snapshot(col)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "flip":
        flip_byte(path, path.stat().st_size - 100)  # inside the vector data: loads fine
    else:
        path.unlink()
    with pytest.raises(CorruptCollection, match=path.name):
        reopen(engine, "kb")
    assert any(path.name in p for p in engine.verify("kb"))
    actions = engine.repair("kb")
    assert any(path.name in a for a in actions)
    assert engine.verify("kb") == []
    assert answers(reopen(engine, "kb")) == expected


def test_missing_store_is_refused_and_not_recreated(engine, col):
    (col.folder / "store.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (col.folder / f"store.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CorruptCollection, match=r"store\.sqlite is missing"):
        reopen(engine, "kb")
    with pytest.raises(CorruptCollection, match=r"store\.sqlite is missing"):
        engine.repair("kb")
    assert not (col.folder / "store.sqlite").exists()


def test_damaged_vectors_are_found_and_re_encoded_from_content(engine, col):
    expected = answers(col)
    tail = col.folder / "vectors" / f"tail-{col.manifest.vectors.epoch}.f32"
    flip_byte(tail, 64 * 4 * 10 + 8)
    problems = engine.verify("kb")
    assert problems and "checksum mismatch" in problems[0]
    actions = engine.repair("kb")
    assert any("re-encoded" in a for a in actions)
    assert engine.verify("kb") == []
    assert answers(reopen(engine, "kb")) == expected
    assert reopen(engine, "kb").count() == len(TEXTS)


def test_lost_precomputed_vectors_are_kept_listed_and_dropped_only_when_asked(engine):
    col = engine.create("vecs", encoder="precomputed", options={"dim": 8})
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    col.add(vectors=x, ids=[f"v{i}" for i in range(20)])
    tail = col.folder / "vectors" / f"tail-{col.manifest.vectors.epoch}.f32"
    tail.write_bytes(tail.read_bytes()[: 8 * 4 * 10])  # truncated: half the vectors gone
    with pytest.raises(CorruptCollection, match=r"truncated|holds"):
        reopen(engine, "vecs")
    actions = engine.repair("vecs")  # no snapshot, no encoder for vectors: nothing to restore
    assert any("20 documents have lost their vectors" in a and "v3" in a for a in actions)
    reopened = reopen(engine, "vecs")
    assert reopened.count() == 20 and reopened.get(["v3"])[0] is not None  # still stored
    assert reopened.search(vector=x[3], k=5) == []  # but never served from damaged rows
    assert any("--drop-unrecoverable" in p for p in engine.verify("vecs"))
    actions = engine.repair("vecs", drop_unrecoverable=True)
    assert any("removed 20 documents" in a and "v3" in a for a in actions)
    reopened = reopen(engine, "vecs")
    assert reopened.count() == 0 and engine.verify("vecs") == []
    reopened.add(vectors=x, ids=[f"v{i}" for i in range(20)])
    assert reopened.search(vector=x[3], k=1)[0].id == "v3"


def test_manifest_naming_a_missing_generation_is_refused(engine, col):
    import json

    manifest = col.folder / "manifest.json"
    data = json.loads(manifest.read_text())
    data["snapshot_generation"] = data["generation"] + 5
    manifest.write_text(json.dumps(data))
    with pytest.raises(CorruptCollection, match=f"index-{data['generation'] + 5}.faiss"):
        reopen(engine, "kb")
    engine.repair("kb")
    assert engine.verify("kb") == []
