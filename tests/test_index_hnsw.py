"""`hnsw`: masked deletes and their rebuild, filter plans, options, snapshot files."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import indexes.hnsw
from engine.errors import BadInput, CorruptCollection
from indexes._idmap import IdMap
from indexes.hnsw import HnswIndex
from indexes.ivfpq import IvfPqIndex
from indexes.testing import clustered, recall

DIM = 16


@pytest.fixture(scope="module")
def data():
    vectors = clustered(2000, DIM, seed=3, clusters=30, latent=8)
    return 10 + 2 * np.arange(2000), vectors


def built(data, **params):
    ids, vectors = data
    index = HnswIndex(DIM, M="12", **params)
    index.add(ids, vectors)
    return index


def exact(data, queries, allowed, k=10):
    ids, vectors = data
    keep = np.isin(ids, allowed)
    top = np.argsort(-(queries @ vectors[keep].T), axis=1)[:, :k]
    return ids[keep][top]


def test_deleted_share_past_the_threshold_asks_for_a_rebuild(data):
    ids, vectors = data
    index = built(data, max_deleted="0.2")
    index.remove(ids[:300])
    assert index.needs_rebuild() is None
    index.remove(ids[300:500])
    assert "25%" in index.needs_rebuild() and "max_deleted=0.2" in index.needs_rebuild()
    index.rebuild(ids[500:], vectors[500:])
    assert index.needs_rebuild() is None
    assert index.state() == {"nodes": 1500, "deleted": 0, "M": 12}


def test_upsert_masks_the_old_node_and_adds_a_new_one(data):
    ids, vectors = data
    index = built(data)
    index.remove(ids[:1])
    index.add(ids[:1], vectors[1:2])
    assert index.state()["nodes"] == 2001 and index.state()["deleted"] == 1
    _, found = index.search(vectors[1:2], 2)
    assert sorted(found[0]) == sorted(ids[:2])


def test_adding_a_live_id_again_is_refused(data):
    ids, vectors = data
    index = built(data)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[5:6], vectors[5:6])
    assert len(index) == 2000 and index.state()["nodes"] == 2000


def test_a_mostly_deleted_graph_still_returns_k(data):
    ids, vectors = data
    index = built(data, max_deleted="1")
    index.remove(ids[:1950])
    _, found = index.search(vectors[:20], 10)
    assert ((found >= 0).sum(axis=1) == 10).all() and np.isin(found, ids[1950:]).all()


@pytest.mark.parametrize(
    ("share", "exact_rows"),
    [(0.5, 4096), (0.02, 4096), (0.02, 10)],
    ids=["walk", "gathered-exact", "scanned-exact"],
)
def test_every_filter_plan_returns_k_good_hits(data, monkeypatch, share, exact_rows):
    ids, vectors = data
    monkeypatch.setattr(indexes.hnsw, "_EXACT_ROWS", exact_rows)
    index = built(data)
    allowed = ids[np.random.default_rng(0).random(len(ids)) < share]
    queries = vectors[::100] + 0.05
    _, found = index.search(queries, 10, allowed_ids=allowed)
    assert ((found >= 0).sum(axis=1) == 10).all() and np.isin(found, allowed).all()
    assert recall(found, exact(data, queries, allowed)) >= 0.95


def test_options_arrive_as_strings_and_unknown_ones_are_refused():
    index = HnswIndex(DIM, M="8", efConstruction="20", efSearch="30", max_deleted="0.5")
    assert (index.M, index.ef_construction, index.ef_search, index.max_deleted) == (8, 20, 30, 0.5)
    with pytest.raises(BadInput, match="unknown option 'ef'"):
        HnswIndex(DIM, ef=10)
    with pytest.raises(BadInput, match="'M'"):
        HnswIndex(DIM, M="many")


def test_an_empty_index_saves_and_loads(tmp_path):
    HnswIndex(DIM).save(tmp_path / "empty.idx")
    index = HnswIndex.load(tmp_path / "empty.idx", DIM)
    assert len(index) == 0 and (index.search(np.ones((1, DIM)), 3)[1] == -1).all()


def test_snapshot_of_another_kind_or_cut_short_is_refused(data, tmp_path):
    path = tmp_path / "hnsw.idx"
    built(data).save(path)
    with pytest.raises(CorruptCollection, match="holds kind 'hnsw'"):
        IvfPqIndex.load(path, DIM)
    with pytest.raises(ValueError, match="dim"):
        HnswIndex.load(path, DIM * 2)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptCollection):
        HnswIndex.load(path, DIM)


@pytest.mark.parametrize("stride", [1, 10**9], ids=["dense-ids", "sparse-ids"])
def test_id_map_follows_adds_removes_and_upserts(stride):
    ids = 7 + stride * np.arange(100)
    idmap = IdMap()
    idmap.append(ids[:60])
    assert sorted(idmap.positions(ids[::-1])) == list(range(60))  # a set: any order in and out
    idmap.append(ids[60:])
    idmap.remove(ids[10:20])
    idmap.append(ids[15:16])  # upsert: a new position for the same id
    assert idmap.live_count == 91 and idmap.deleted_count == 10
    assert sorted(idmap.positions(ids[[0, 15, 99, 12]])) == [0, 99, 100]
    assert len(idmap.positions(np.array([-5, 3, 10**15]))) == 0
    assert (idmap.labels_to_ids(np.array([[100, -1]])) == [[ids[15], -1]]).all()


def test_a_fresh_id_map_answers_parallel_filtered_searches_in_full():
    """Searches share an index under a read lock, so the first filtered searches after a
    snapshot reload build the map's id table together: none may see it half made (a table
    published before it was filled gave them no positions, so 0 hits, in the thread stress).
    """
    ids = np.arange(1, 1_000_001, dtype=np.int64)  # large enough that filling takes a while
    wanted = np.array([5, 1_000, 999_999])
    short = []
    for _ in range(10):
        idmap, start = IdMap(ids), threading.Barrier(4)

        def look(idmap=idmap, start=start):
            start.wait()
            short.append(len(idmap.positions(wanted)) != len(wanted))

        threads = [threading.Thread(target=look) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(short) == 40 and not any(short)


class _Log:
    """The engine's exact-vector log in miniature: vectors by id, reads counted."""

    def __init__(self, ids, vectors):
        self.rows = dict(zip(ids.tolist(), vectors, strict=True))
        self.dim = vectors.shape[1]
        self.read = 0

    def get(self, ids):
        self.read += len(ids)
        return np.stack([self.rows[i] for i in ids.tolist()]).astype(np.float32)


def test_a_snapshot_sharing_vectors_leaves_them_out_and_takes_them_back_on_attach(data, tmp_path):
    ids, vectors = data
    index = built(data)
    index.remove(ids[::9])  # masked nodes: a walk still passes through them, so they come back
    full, lean = tmp_path / "full", tmp_path / "lean"
    index.save(full)
    index.save_sharing_vectors(lean)
    # exactly the storage is left out: every position's vector, masked ones included
    assert full.stat().st_size - lean.stat().st_size >= len(ids) * DIM * 4
    loaded = HnswIndex.load(lean, DIM)
    assert loaded.stored_vectors(ids[:5]) is None  # holds none of its own: repair must not ask
    with pytest.raises(RuntimeError, match="attach_vectors"):  # never a read through null
        loaded.search(vectors[:3], 10)
    log = _Log(ids, vectors)
    loaded.attach_vectors(log)
    assert log.read == len(ids)
    queries = clustered(50, DIM, seed=8, clusters=30, latent=8)
    allowed = ids[1::3]
    for allowed_ids in (None, allowed):
        want = index.search(queries, 10, allowed_ids)
        got = loaded.search(queries, 10, allowed_ids)
        assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0])
    loaded.attach_vectors(log)  # attached once: a replay's attach reads nothing again
    assert log.read == len(ids)
    loaded.add(np.array([10**6]), vectors[:1])  # and it grows like any graph (ids[0] is masked)
    assert loaded.search(vectors[:1], 1)[1][0, 0] == 10**6


def test_a_snapshot_with_its_vectors_loads_complete_without_the_log(data, tmp_path):
    """Snapshots of earlier versions (and of tuned collections) carry the storage."""
    ids, vectors = data
    index = built(data)
    index.save(tmp_path / "full")
    loaded = HnswIndex.load(tmp_path / "full", DIM)
    found, stored = loaded.stored_vectors(ids[:5])
    assert np.array_equal(found, ids[:5]) and np.allclose(stored, vectors[:5])
    log = _Log(ids, vectors)
    loaded.attach_vectors(log)
    assert log.read == 0
    queries = clustered(20, DIM, seed=9, clusters=30, latent=8)
    assert np.array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
