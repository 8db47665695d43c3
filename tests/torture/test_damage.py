"""Damage that checksums of whole files missed or that repair handled badly (issue 11).

Damaged exact vectors are refused where a replay would serve them; repair restores them from the
index snapshot or the stored content and never deletes a caller's documents unasked; a damaged
store is `CorruptCollection`, never a raw database error; an index snapshot that does not load,
or holds other vectors than the exact ones, is found by `verify` and rebuilt by `repair`; new
files reach the disk's directory before a manifest names them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from handles import reopen

from engine import CorruptCollection
from engine.cli import cli
from engine.manifest import file_crc32

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def precomputed(engine, n: int, name: str = "vecs"):
    col = engine.create(name, encoder="precomputed", options={"dim": DIM}, index="flat")
    x = vectors(n)
    col.add(vectors=x, ids=[f"v{i}" for i in range(n)])
    return col, x


def tail_of(col) -> Path:
    return col.folder / "vectors" / f"tail-{col.manifest.vectors.epoch}.f32"


def overwrite_row(path: Path, row: int) -> None:
    with open(path, "r+b") as f:
        f.seek(row * DIM * 4)
        f.write(vectors(1, seed=99).tobytes())


def self_found(col, x: np.ndarray, ids: range) -> int:
    return sum(col.search(vector=x[i], k=1)[0].id == f"v{i}" for i in ids)


def set_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- item 2: the exact vectors a replay reads are checked -------------------------------------


def test_a_damaged_row_of_an_unsnapshotted_flat_collection_is_refused_on_open(engine):
    col, _ = precomputed(engine, 200)
    assert col.manifest.snapshot_generation is None  # flat: every open replays the tail
    overwrite_row(tail_of(col), 17)
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32 is damaged .*rows 0-"):
        reopen(engine, "vecs")
    assert any("tail-0.f32" in p and "checksum mismatch" in p for p in engine.verify("vecs"))


def test_a_reader_replaying_a_new_commit_refuses_damaged_rows(engine):
    col, x = precomputed(engine, 200)
    reader = reopen(engine, "vecs")
    col.add(vectors=vectors(50, seed=1), ids=[f"w{i}" for i in range(50)])
    overwrite_row(tail_of(col), 210)  # a row of the commit the reader has not replayed yet
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32 is damaged"):
        reader.search(vector=x[0], k=3)


def test_repair_restores_vectors_from_the_snapshot_and_keeps_what_it_cannot(engine):
    col, x = precomputed(engine, 2000)
    col.checkpoint()  # the snapshot holds the first 2,000 vectors in full
    col.add(vectors=vectors(100, seed=1), ids=[f"w{i}" for i in range(100)])
    overwrite_row(tail_of(col), 1500)
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32"):
        reopen(engine, "vecs")
    actions = engine.repair("vecs")
    assert any("2000 restored from the index snapshot" in a for a in actions), actions
    assert any("100 documents have lost their vectors" in a and "w0" in a for a in actions)
    col = reopen(engine, "vecs")
    assert col.count() == 2100  # nothing deleted unasked
    assert self_found(col, x, range(0, 2000, 7)) == len(range(0, 2000, 7))
    assert col.get(["w5"])[0] is not None
    problems = engine.verify("vecs")  # still damaged, and says why
    assert any("100 documents have lost their vectors" in p for p in problems)
    # the command line fails until the caller decides; dropping is an explicit option
    runner = CliRunner()
    home = ["--home", str(engine.home)]
    result = runner.invoke(cli, [*home, "repair", "vecs"])
    assert result.exit_code == 1 and "--drop-unrecoverable" in result.output
    result = runner.invoke(cli, [*home, "repair", "--drop-unrecoverable", "vecs"])
    assert result.exit_code == 0, result.output
    assert "removed 100 documents" in result.output
    col = reopen(engine, "vecs")
    assert col.count() == 2000 and engine.verify("vecs") == []
    assert self_found(col, x, range(0, 2000, 7)) == len(range(0, 2000, 7))


def test_repair_re_encodes_texts_and_keeps_every_document(engine):
    col = engine.create("kb", encoder="fake-hash", options={"dim": DIM}, index="flat")
    texts = [f"article {i} about w{i % 13} and w{i % 7}" for i in range(300)]
    col.add(texts=texts, ids=[f"a{i}" for i in range(300)])
    before = [h.id for h in col.search("article 12 about w12", k=5)]
    overwrite_row(tail_of(col), 12)
    actions = engine.repair("kb")
    assert any("300 re-encoded" in a for a in actions), actions
    col = reopen(engine, "kb")
    assert col.count() == 300 and engine.verify("kb") == []
    assert [h.id for h in col.search("article 12 about w12", k=5)] == before


@pytest.mark.parametrize("old_format", [False, True], ids=["graph-only", "earlier-version"])
def test_a_graph_snapshot_without_vectors_cannot_restore_them_and_repair_says_so(
    engine, old_format
):
    """`hnsw` snapshots keep the graph, not the vectors (the log holds them once): damage to
    the log is refused on open, and repair restores from the snapshot only what it holds, so
    precomputed vectors are listed as lost unless an earlier version's snapshot still has them.
    """
    col = engine.create("vecs", encoder="precomputed", options={"dim": DIM}, index="hnsw")
    x = vectors(2000)
    col.add(vectors=x, ids=[f"v{i}" for i in range(2000)])
    col.checkpoint()
    if old_format:  # the snapshot as every version before issue 16 wrote it, vectors inside
        path = col.folder / f"index-{col.manifest.snapshot_generation}.faiss"
        col.view.load_index().save(path)
        set_manifest(col.folder, snapshot_crc32=file_crc32(path))
    overwrite_row(tail_of(col), 1500)
    if not old_format:  # the graph's storage is read from the log, checksums included
        with pytest.raises(CorruptCollection, match=r"tail-0\.f32.*rows 0-1999"):
            reopen(engine, "vecs")
    assert any("tail-0.f32 is damaged" in p for p in engine.verify("vecs"))
    actions = engine.repair("vecs")
    if old_format:
        assert any("2000 restored from the index snapshot" in a for a in actions), actions
        assert engine.verify("vecs") == []
        assert self_found(reopen(engine, "vecs"), x, range(0, 2000, 7)) == len(range(0, 2000, 7))
    else:  # one 4 MiB chunk holds all 2,000 rows at 16-d: all of them are suspect
        assert any("0 restored from the index snapshot" in a for a in actions), actions
        assert any("2000 documents have lost their vectors" in a for a in actions), actions
        col = reopen(engine, "vecs")
        assert col.count() == 2000 and col.get(["v5"])[0] is not None  # kept, unsearchable


def test_repair_re_encodes_the_texts_of_a_graph_collection(engine):
    col = engine.create("kb", encoder="fake-hash", options={"dim": DIM}, index="hnsw")
    texts = [f"article {i} about w{i % 13} and w{i % 7}" for i in range(300)]
    col.add(texts=texts, ids=[f"a{i}" for i in range(300)])
    col.checkpoint()
    before = [h.id for h in col.search("article 12 about w12", k=5)]
    overwrite_row(tail_of(col), 12)
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32"):
        reopen(engine, "kb")
    actions = engine.repair("kb")
    assert any("0 restored from the index snapshot, 300 re-encoded" in a for a in actions)
    col = reopen(engine, "kb")
    assert col.count() == 300 and engine.verify("kb") == []
    assert [h.id for h in col.search("article 12 about w12", k=5)] == before


def test_collections_without_chunk_checksums_open_and_get_them_at_the_next_write(engine):
    col, x = precomputed(engine, 300)
    data = json.loads((col.folder / "manifest.json").read_text())
    for key in ("chunk_rows", "chunk_crc32"):  # as an earlier version wrote it
        data["vectors"].pop(key)
    (col.folder / "manifest.json").write_text(json.dumps(data))
    old = reopen(engine, "vecs")
    assert old.manifest.vectors.chunk_rows == 0
    assert self_found(old, x, range(0, 300, 11)) == len(range(0, 300, 11))
    old.add(vectors=vectors(10, seed=2), ids=[f"n{i}" for i in range(10)])
    files = old.manifest.vectors
    assert files.chunk_rows > 0 and len(files.chunk_crc32) == -(
        -files.tail_rows // files.chunk_rows
    )
    overwrite_row(tail_of(old), 5)
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32"):
        reopen(engine, "vecs")


# -- item 5: a damaged store ------------------------------------------------------------------


def test_a_damaged_store_is_corrupt_collection_and_repair_says_it_cannot_rebuild_it(engine):
    # Without a keyword index: the damaged middle page must be one of the documents' pages,
    # which `get` and a filtered search read (FTS5 pages are read only for matching terms).
    col = engine.create(
        "kb", encoder="fake-hash", options={"dim": DIM}, index="flat", keyword=False
    )
    texts = [f"article {i} " + "filler words " * 40 for i in range(3000)]
    col.add(
        texts=texts, ids=[f"a{i}" for i in range(3000)], metadata=[{"n": i} for i in range(3000)]
    )
    col.close()
    store = col.folder / "store.sqlite"
    assert not Path(f"{store}-wal").exists() or Path(f"{store}-wal").stat().st_size == 0
    size = store.stat().st_size
    with open(store, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xff" * 4096)
    with pytest.raises(CorruptCollection, match=r"store\.sqlite is damaged"):
        reopened = reopen(engine, "kb")  # open may pass: the damaged page need not be read yet
        reopened.get([f"a{i}" for i in range(3000)])
        reopened.search("article 5", k=3000, where={"n": {"$gte": 0}})
    problems = engine.verify("kb")
    assert problems and all("store.sqlite is damaged" in p for p in problems)
    with pytest.raises(CorruptCollection, match=r"cannot be rebuilt from the vectors"):
        engine.repair("kb")
    result = CliRunner().invoke(cli, ["--home", str(engine.home), "repair", "kb"])
    assert result.exit_code != 0 and "store.sqlite is damaged" in result.output
    assert "Traceback" not in result.output


def test_an_empty_store_file_is_corrupt_collection(engine):
    col = engine.create("kb", encoder="fake-hash", options={"dim": DIM})
    col.add(texts=["one text", "another text"], ids=["a", "b"])
    col.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{col.folder / 'store.sqlite'}{suffix}").unlink(missing_ok=True)
    (col.folder / "store.sqlite").write_bytes(b"")
    with pytest.raises(CorruptCollection, match=r"store\.sqlite is damaged \(no such table"):
        reopen(engine, "kb")
    assert any("table 'documents' is missing" in p for p in engine.verify("kb"))


# -- section 1: a snapshot whose checksum is right but which does not load ---------------------


def test_a_snapshot_that_does_not_load_is_found_and_rebuilt(engine):
    import faiss

    col, x = precomputed(engine, 500)
    col.checkpoint()
    m = col.manifest
    path = col.folder / f"index-{m.snapshot_generation}.faiss"
    bad = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    bad.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    bad.id_map.push_back(10_000)  # "id_map size does not match ntotal"
    faiss.write_index(bad, str(path))
    set_manifest(col.folder, snapshot_crc32=file_crc32(path))  # the checksum is right
    with pytest.raises(CorruptCollection, match=r"does not match|unreadable"):
        reopen(engine, "vecs")
    assert any(path.name in p for p in engine.verify("vecs"))
    actions = engine.repair("vecs")
    assert any(path.name in a for a in actions)
    assert engine.verify("vecs") == []
    assert self_found(reopen(engine, "vecs"), x, range(0, 500, 9)) == len(range(0, 500, 9))


# -- item 10: the index's vectors are compared with the exact vectors --------------------------


def test_verify_finds_an_index_holding_another_vector_under_a_right_id(engine):
    import faiss

    col, x = precomputed(engine, 300)
    col.checkpoint()
    m = col.manifest
    path = col.folder / f"index-{m.snapshot_generation}.faiss"
    stale = x.copy()
    stale[:, :] = vectors(300, seed=7)  # right ids, other vectors (a stale or foreign index)
    idx = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    idx.add_with_ids(stale, np.arange(len(x), dtype=np.int64))
    faiss.write_index(idx, str(path))
    set_manifest(col.folder, snapshot_crc32=file_crc32(path))
    problems = engine.verify("vecs")
    assert any("other vectors than the exact vectors" in p for p in problems), problems
    engine.repair("vecs")
    assert engine.verify("vecs") == []
    assert self_found(reopen(engine, "vecs"), x, range(300)) == 300


# -- item 8: directory entries are durable before the manifest names them ----------------------


def test_the_vectors_folder_is_fsynced_after_the_tail_is_created_and_before_the_commit(
    engine, monkeypatch
):
    col = engine.create("vecs", encoder="precomputed", options={"dim": DIM})
    vec_dir = os.path.realpath(col.folder / "vectors")
    events: list[tuple[str, str]] = []
    fds: dict[int, str] = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace
    real_builtin_open = open

    def spy_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        fds[fd] = os.path.realpath(path)
        return fd

    def spy_fsync(fd):
        path = fds.get(fd)
        if path is not None and os.path.isdir(path):
            events.append(("fsync-dir", path))
        return real_fsync(fd)

    def spy_replace(src, dst, *args, **kwargs):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst, *args, **kwargs)

    def spy_builtin_open(file, mode="r", *args, **kwargs):
        existed = os.path.exists(file) if isinstance(file, (str, os.PathLike)) else True
        f = real_builtin_open(file, mode, *args, **kwargs)
        if not existed:
            events.append(("create", os.path.realpath(file)))
        return f

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr("builtins.open", spy_builtin_open)
    col.add(vectors=vectors(5), ids=[f"v{i}" for i in range(5)])
    monkeypatch.undo()
    tail = os.path.join(vec_dir, "tail-0.f32")
    created = events.index(("create", tail))
    commit = events.index(("replace", "manifest.json"))
    assert ("fsync-dir", vec_dir) in events[created:commit], events
    assert ("fsync-dir", os.path.realpath(col.folder)) in events[commit:], events


# -- issue 14: the keyword index is checked like the rest --------------------------------------

KEYWORD_DAMAGE = {
    # a write that missed the index; stale terms; FTS5's own structures out of step
    "unindexed": ("DELETE FROM keywords WHERE rowid = {id}", "not indexed"),
    "stale": ("UPDATE keywords SET terms = 'nothing like it' WHERE rowid = {id}", "terms are not"),
    "shadow": ("DELETE FROM keywords_content WHERE id = {id}", "integrity-check failed"),
}


@pytest.mark.parametrize("damage", sorted(KEYWORD_DAMAGE))
def test_verify_finds_a_damaged_keyword_index_and_repair_rebuilds_it(engine, damage):
    import sqlite3

    col = engine.create("kb", encoder="fake-hash", options={"dim": DIM}, index="flat")
    texts = [f"ticket {i} error ERR_{i}_X" for i in range(200)]
    col.add(texts=texts, ids=[f"t{i}" for i in range(200)])
    assert [h.id for h in col.search("ERR_17_X", mode="keyword", k=1)] == ["t17"]
    assert engine.verify("kb") == []
    col.close()
    sql, found = KEYWORD_DAMAGE[damage]
    with sqlite3.connect(col.folder / "store.sqlite") as db:
        (iid,) = db.execute("SELECT id FROM documents WHERE external_id = 't17'").fetchone()
        db.execute(sql.format(id=iid))
    problems = engine.verify("kb")
    assert any("keyword index is damaged" in p and found in p for p in problems), problems
    result = CliRunner().invoke(cli, ["--home", str(engine.home), "verify", "kb"])
    assert result.exit_code == 1 and "keyword index is damaged" in result.output
    actions = engine.repair("kb")
    assert any("rebuilt the keyword index" in a for a in actions)
    assert engine.verify("kb") == []
    hits = reopen(engine, "kb").search("ERR_17_X", mode="keyword", k=1)
    assert [(h.id, h.content) for h in hits] == [("t17", texts[17])]


def test_verify_waits_for_a_writer_instead_of_calling_its_lock_damage(engine):
    # FTS5's integrity-check is an INSERT: it needs the write lock a writer may be holding.
    import sqlite3
    import threading

    col = engine.create("kb", encoder="fake-hash", options={"dim": DIM}, index="flat")
    col.add(texts=["one text", "another text"], ids=["a", "b"])
    col.close()
    db = sqlite3.connect(col.folder / "store.sqlite", check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")  # a writer's transaction, held for a second
    threading.Timer(1.0, db.rollback).start()
    assert engine.verify("kb") == []
    db.close()
