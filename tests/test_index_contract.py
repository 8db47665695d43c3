"""The contract every index kind keeps, run against each registered built-in kind.

Small clustered data (32-d, a few thousand vectors) and options scaled down to it: `ivfpq`
trains at 1,000 vectors so its trained path is the one under test, `auto` switches from exact
to `hnsw` at 1,000 so the switch happens inside the tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.registry import INDEXES, Registry
from indexes.testing import ArrayLookup, clustered, recall

DIM = 32
N = 3000
KINDS = {
    "flat": {},
    "hnsw": {"M": "16", "efConstruction": "40", "efSearch": "64"},
    "ivfpq": {"nlist": "16", "pq": "8", "nbits": "5", "train_min": "1000", "rerank": "20"},
    "auto": {"exact_max": "1000", "hnsw.M": "16", "hnsw.efConstruction": "40"},
}


def build(kind, ids, vectors, lookup):
    index = Registry().load(INDEXES, kind)(DIM, **KINDS[kind])
    index.attach_vectors(lookup)
    for start in range(0, len(ids), 700):  # several commits, as the engine makes them
        index.add(ids[start : start + 700], vectors[start : start + 700])
    return index


@pytest.fixture(scope="module")
def data():
    vectors = clustered(N, DIM, seed=7, clusters=40, latent=12)
    ids = 1000 + 3 * np.arange(N)  # sparse, growing, not 0..n-1
    queries = clustered(50, DIM, seed=7, start=10**6, clusters=40, latent=12)
    return ids, vectors, queries


@pytest.fixture
def lookup(data):
    """The engine's exact vectors; a copy per test, since upserts change it."""
    ids, vectors, _ = data
    return ArrayLookup(ids, vectors.copy())


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture
def index(kind, data, lookup):
    ids, vectors, _ = data
    return build(kind, ids, vectors, lookup)


def exact(data, k=10, allowed=None, drop=()):
    """Ground truth: brute force over the data minus ``drop``, restricted to ``allowed``."""
    ids, vectors, queries = data
    keep = ~np.isin(ids, drop)
    if allowed is not None:
        keep &= np.isin(ids, allowed)
    scores = queries @ vectors[keep].T
    top = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, top, axis=1), ids[keep][top]


def is_exact(index):
    """Flat, `auto` while it is flat, `ivfpq` before training: exact by construction."""
    active = getattr(index, "active", index)
    return active.kind == "flat" or getattr(active, "trained", True) is False


def test_every_vector_finds_itself_first(index, data):
    ids, vectors, _ = data
    scores, found = index.search(vectors[::97], 5)
    assert (found[:, 0] == ids[::97]).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-3)
    assert len(index) == N and sorted(index.ids()) == sorted(ids)


def test_search_quality_against_exact(index, data):
    _, truth = exact(data)
    _, found = index.search(data[2], 10)
    assert recall(found, truth) >= 0.9


def test_fewer_vectors_than_k_are_padded(kind, data, lookup):
    ids, vectors, queries = data
    index = build(kind, ids[:3], vectors[:3], lookup)
    scores, found = index.search(queries[:2], 5)
    assert sorted(found[0, :3]) == sorted(ids[:3]) and (found[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()


def test_upsert_replaces_the_vector(index, data, lookup):
    ids, vectors, _ = data
    target, old = ids[10], vectors[10]
    index.remove([target])
    lookup.put([target], -old[None, :])
    index.add([target], -old[None, :])  # the opposite direction: the old query must miss it
    assert len(index) == N
    assert index.search(-old[None, :], 1)[1][0, 0] == target
    assert target not in index.search(old[None, :], 50)[1]


def test_deleted_ids_are_never_returned(index, data):
    ids, vectors, queries = data
    deleted = ids[np.random.default_rng(1).random(N) < 0.3]
    index.remove(deleted)
    index.remove(deleted[:5])  # removing again is harmless
    assert len(index) == N - len(deleted)
    _, found = index.search(np.concatenate([queries, vectors[:200]]), 20)
    assert not np.isin(found, deleted).any()
    _, found = index.search(queries, 20, allowed_ids=ids[::2])
    assert not np.isin(found, deleted).any() and (found >= 0).all()


@pytest.mark.parametrize("share", [0.002, 0.02, 0.2, 0.7])
def test_filtered_search_returns_k_when_k_match(index, data, share):
    ids, _, queries = data
    rng = np.random.default_rng(int(share * 1000))
    allowed = ids[rng.random(N) < share]
    allowed = np.concatenate([allowed, [5, 10**9]])  # ids the index never held are ignored
    _, found = index.search(queries, 10, allowed_ids=allowed)
    wanted = min(10, len(allowed) - 2)
    assert ((found >= 0).sum(axis=1) == wanted).all()
    assert np.isin(found[found >= 0], allowed).all()
    assert recall(found, exact(data, allowed=allowed)[1]) >= 0.95


@pytest.mark.parametrize("share", [0.002, 0.05, 0.6])
def test_search_exact_is_brute_force_over_the_ids_or_declined(kind, index, data, share):
    ids, _, queries = data
    rng = np.random.default_rng(int(share * 1000) + 1)
    allowed = ids[rng.random(N) < share]
    deleted = allowed[::7]
    index.remove(deleted)
    asked = np.concatenate([allowed, [5, 10**9]])  # ids the index never held are ignored
    result = index.search_exact(queries, 10, asked)
    if kind == "ivfpq":  # keeps codes, not vectors: the engine reads its exact file instead
        assert result is None
        return
    scores, found = result
    want_scores, want = exact(data, allowed=allowed, drop=deleted)
    width = want.shape[1]  # fewer than k when few ids are allowed: the rest is padding
    assert (found[:, :width] == want).all() and (found[:, width:] == -1).all()
    assert np.allclose(scores[:, :width], want_scores, atol=1e-5)


def test_reserve_keeps_results_and_the_storage_in_place(kind, data, lookup):
    """After reserve(n), adds of n vectors in several commits never move the storage.

    Each move would hold the old and the new buffer at once: the writer's peak memory.
    """
    import faiss

    ids, vectors, queries = data
    index = Registry().load(INDEXES, kind)(DIM, **KINDS[kind])
    index.attach_vectors(lookup)
    index.reserve(N)
    buffers = set()  # (active kind, address of its vector storage) after each add
    for start in range(0, N, 500):
        index.add(ids[start : start + 500], vectors[start : start + 500])
        active = getattr(index, "active", index)
        if active.kind == "flat":
            buffers.add(("flat", int(faiss.downcast_index(active._index.index).get_xb())))
        elif active.kind == "hnsw":
            buffers.add(("hnsw", int(faiss.downcast_index(active._graph.storage).get_xb())))
    assert len(index) == N
    assert recall(index.search(queries, 10)[1], exact(data)[1]) >= 0.9
    if kind in ("flat", "hnsw"):
        assert len(buffers) == 1
    if kind == "auto":  # the graph it switches to is sized for the whole add at the switch
        assert len([b for b in buffers if b[0] == "hnsw"]) == 1


def test_empty_filter_returns_nothing(index, data):
    scores, found = index.search(data[2][:3], 4, allowed_ids=np.empty(0, np.int64))
    assert (found == -1).all() and np.isneginf(scores).all()


def test_reopened_index_gives_identical_results(kind, index, data, lookup, tmp_path):
    ids, vectors, queries = data
    index.remove(ids[:300])
    before = index.search(queries, 10), index.search(queries, 10, allowed_ids=ids[::7])
    index.save(tmp_path / "index.bin")
    reopened = type(index).load(tmp_path / "index.bin", DIM, **KINDS[kind])
    reopened.attach_vectors(lookup)
    after = reopened.search(queries, 10), reopened.search(queries, 10, allowed_ids=ids[::7])
    for (s1, i1), (s2, i2) in zip(before, after, strict=True):
        assert (i1 == i2).all() and np.allclose(s1, s2)
    assert len(reopened) == len(index) and reopened.state() == index.state()
    reopened.add(ids[:300], vectors[:300])  # and it keeps taking writes
    assert reopened.search(vectors[:1], 1)[1][0, 0] == ids[0]


def test_rebuild_holds_exactly_the_given_vectors(index, data):
    ids, vectors, queries = data
    index.remove(ids[: N // 2])
    index.rebuild(ids[N // 3 :], vectors[N // 3 :])
    assert len(index) == N - N // 3 and sorted(index.ids()) == sorted(ids[N // 3 :])
    assert index.needs_rebuild() is None
    _, found = index.search(queries, 10)
    assert recall(found, exact(data, drop=ids[: N // 3])[1]) >= 0.9


@pytest.mark.parametrize("target", sorted(KINDS))
def test_switching_kind_from_the_lookup_keeps_results(kind, index, target, data, lookup):
    """Building kind B from kind A's ids and the engine's vectors loses nothing, and the exact
    paths (flat, filters small enough to score exactly) agree to the last digit."""
    ids, _, queries = data
    index.remove(ids[::5])
    other = Registry().load(INDEXES, target)(DIM, **KINDS[target])
    other.attach_vectors(lookup)
    held = index.ids()
    other.rebuild(held, lookup.get(held))
    assert sorted(other.ids()) == sorted(held)
    small = ids[1::40]  # 60 allowed, 48 still live: every kind scores them exactly
    s1, i1 = index.search(queries, 10, allowed_ids=small)
    s2, i2 = other.search(queries, 10, allowed_ids=small)
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)
    truth = exact(data, drop=ids[::5])
    for found in (index.search(queries, 10)[1], other.search(queries, 10)[1]):
        assert recall(found, truth[1]) >= 0.9
    if is_exact(index) and is_exact(other):
        assert (index.search(queries, 10)[1] == other.search(queries, 10)[1]).all()


def test_stored_vectors_are_the_added_ones_or_none_for_codes_only(index, kind, data):
    """What `verify` compares with the exact vectors and `repair` restores them from."""
    ids, vectors, _ = data
    index.remove(ids[:5])
    wanted = np.concatenate([ids[:10], ids[100:110], [7]])  # 5 removed, 15 held, 1 never added
    stored = index.stored_vectors(wanted)
    if kind == "ivfpq":  # trained: only codes
        assert stored is None
        return
    found, held = stored
    order = np.argsort(found)
    assert found[order].tolist() == np.concatenate([ids[5:10], ids[100:110]]).tolist()
    expect = np.concatenate([vectors[5:10], vectors[100:110]])
    assert np.array_equal(held[order], expect)
