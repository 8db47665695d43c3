"""`ivfpq`: the untrained rule, training on the add that reaches it, drift and growth checks,
memory per vector, OPQ, GPU fallback."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import BadInput
from indexes import gpu
from indexes.flat import FlatIndex
from indexes.ivfpq import IvfPqIndex
from indexes.testing import ArrayLookup, clustered, recall

DIM = 32
SMALL = {"nlist": "16", "pq": "8", "nbits": "5", "train_min": "1000", "rerank": "20"}


def stream(n, start=0, drift=0.0):
    return clustered(n, DIM, seed=11, start=start, clusters=40, latent=12, drift=drift)


@pytest.fixture(scope="module")
def data():
    vectors = stream(3000)
    return 5 + 7 * np.arange(3000), vectors


def ivfpq(data, n, **params):
    ids, vectors = data
    index = IvfPqIndex(DIM, **{**SMALL, **params})
    index.attach_vectors(ArrayLookup(ids, vectors))
    for start in range(0, n, 400):
        index.add(ids[start : min(n, start + 400)], vectors[start : min(n, start + 400)])
    return index


def test_below_train_min_it_is_exact_like_flat(data):
    ids, vectors = data
    index, flat = ivfpq(data, 999), FlatIndex(DIM)
    flat.add(ids[:999], vectors[:999])
    queries = stream(20, start=10**6)
    for allowed in (None, ids[:999:3]):
        s1, i1 = index.search(queries, 10, allowed)
        s2, i2 = flat.search(queries, 10, allowed)
        assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)
    assert index.state() == {"trained": False, "held_exact": 999, "train_min": 1000}
    assert index.needs_rebuild() is None


def test_the_add_reaching_train_min_trains_and_keeps_every_vector(data):
    ids, vectors = data
    index = ivfpq(data, 1200)  # commits of 400: the third one crosses 1000
    assert index.trained and index.state()["trained_count"] == 1200
    assert len(index) == 1200 and (index.ids() == ids[:1200]).all()
    _, found = index.search(vectors[:1200:50], 1)
    assert (found[:, 0] == ids[:1200:50]).all()


def test_appends_after_training_are_searchable(data):
    ids, vectors = data
    index = ivfpq(data, 1200)
    index.add(ids[1200:2400], vectors[1200:2400])
    assert len(index) == 2400 and index.state()["trained_count"] == 1200
    _, found = index.search(vectors[1200:2400:60], 1)
    assert (found[:, 0] == ids[1200:2400:60]).all()


def test_vectors_drifting_from_the_centroids_ask_for_a_retrain(data):
    ids, vectors = data
    index = ivfpq(data, 1500, retrain_growth="100")
    index.add(ids[1500:2500], vectors[1500:2500])  # same distribution: no reason
    assert index.needs_rebuild() is None
    moved = stream(1000, start=10**5, drift=4.0)
    index.add(10**6 + np.arange(1000), moved)
    reason = index.needs_rebuild()
    assert reason and "centroids" in reason and "drift_ratio=1.05" in reason
    index.rebuild(ids[:1500], vectors[:1500])
    assert index.needs_rebuild() is None and index.state()["recent_count"] == 0


def test_growth_past_the_training_size_asks_for_a_retrain(data):
    index = ivfpq(data, 2500, retrain_growth="2", train_min="1000")
    assert index.state()["trained_count"] == 1200
    assert "2.1x the 1200 it was trained on" in index.needs_rebuild()


def test_memory_is_codes_and_ids_per_vector_plus_fixed_tables(data):
    index = ivfpq(data, 3000)
    tables = 16 * DIM * 4 + 2**5 * DIM * 4  # centroids, PQ codebooks
    assert index.memory_bytes() == 3000 * (5 + 8) + tables  # 8 x 5-bit codes = 5 bytes


def test_rebuild_below_train_min_goes_back_to_exact(data):
    ids, vectors = data
    index = ivfpq(data, 2000)
    index.rebuild(ids[:500], vectors[:500])
    assert not index.trained and len(index) == 500
    _, found = index.search(vectors[:500:25], 1)
    assert (found[:, 0] == ids[:500:25]).all()


def test_without_a_lookup_it_still_answers_from_the_codes(data):
    ids, vectors = data
    index = IvfPqIndex(DIM, **SMALL)
    index.add(ids, vectors)
    queries = stream(30, start=10**6)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    scores, found = index.search(queries, 10)
    assert recall(found, ids[truth]) >= 0.3 and (found >= 0).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_opq_rotation_trains_and_survives_a_reopen(data, tmp_path):
    ids, vectors = data
    index = ivfpq(data, 2000, opq="true")
    assert index.state()["opq"] is True
    queries = stream(10, start=10**6)
    index.save(tmp_path / "opq.idx")
    reopened = IvfPqIndex.load(tmp_path / "opq.idx", DIM, **SMALL, opq="true")
    reopened.attach_vectors(ArrayLookup(ids, vectors))
    assert (reopened.search(queries, 10)[1] == index.search(queries, 10)[1]).all()


def test_untrained_state_survives_a_reopen(data, tmp_path):
    index = ivfpq(data, 600)
    index.save(tmp_path / "small.idx")
    reopened = IvfPqIndex.load(tmp_path / "small.idx", DIM, **SMALL)
    queries = stream(5, start=10**6)
    assert not reopened.trained and (reopened.ids() == index.ids()).all()
    assert (reopened.search(queries, 5)[1] == index.search(queries, 5)[1]).all()


def test_bad_options_are_refused_with_their_name():
    with pytest.raises(BadInput, match="pq=7 must divide dim=32"):
        IvfPqIndex(DIM, pq=7)
    with pytest.raises(BadInput, match="unknown option 'probes'"):
        IvfPqIndex(DIM, probes=3)
    with pytest.raises(BadInput, match="train_min"):
        IvfPqIndex(DIM, nlist=64, train_min=50)


def test_without_a_gpu_training_falls_back_to_the_cpu_and_gpu_on_is_refused():
    if gpu.gpu_count():
        pytest.skip("a GPU is present: the fallback is not what runs here")
    assert gpu.flat_index(DIM, inner_product=True) is None
    with pytest.raises(BadInput, match="gpu=on but FAISS sees no GPU"):
        IvfPqIndex(DIM, gpu="on")
    with pytest.raises(BadInput, match="'gpu' is one of"):
        IvfPqIndex(DIM, gpu="cuda")
    assert IvfPqIndex(DIM, gpu="off").gpu == "off"
