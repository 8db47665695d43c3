"""`auto`: picks and switches kind by size and memory budget, and records every switch."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import BadInput
from indexes.auto import AutoIndex
from indexes.testing import ArrayLookup, clustered

DIM = 16
IVFPQ = {
    "ivfpq.nlist": "8",
    "ivfpq.pq": "8",
    "ivfpq.nbits": "6",
    "ivfpq.train_min": "300",
    "ivfpq.rerank": "30",
}


@pytest.fixture(scope="module")
def data():
    vectors = clustered(1500, DIM, seed=5, clusters=20, latent=8)
    return 100 + np.arange(1500) * 4, vectors


def grown(data, n, lookup=True, **params):
    ids, vectors = data
    index = AutoIndex(DIM, **{"exact_max": "500", "hnsw.M": "8", **params})
    if lookup:
        index.attach_vectors(ArrayLookup(ids, vectors))
    for start in range(0, n, 200):
        index.add(ids[start : min(n, start + 200)], vectors[start : min(n, start + 200)])
    return index


def finds_itself(index, data, n):
    ids, vectors = data
    return (index.search(vectors[:n:37], 1)[1][:, 0] == ids[:n:37]).all()


def test_it_starts_exact_and_switches_to_hnsw_past_exact_max(data):
    index = grown(data, 400)
    assert index.state() == {"active": "flat", "switches": [], "index": {}}
    index = grown(data, 1000)
    state = index.state()
    assert state["active"] == "hnsw" and index.active.M == 8
    assert state["switches"] == [
        {"from": "flat", "to": "hnsw", "at_count": 600, "reason": "600 vectors > exact_max=500"}
    ]
    assert len(index) == 1000 and finds_itself(index, data, 1000)


def test_a_memory_budget_sends_it_to_ivfpq_instead(data):
    index = grown(data, 1500, memory_mb="0.1", **IVFPQ)  # hnsw needs 0.105 MiB at 600
    (switch,) = index.state()["switches"]
    assert (switch["from"], switch["to"], switch["at_count"]) == ("flat", "ivfpq", 600)
    assert "memory_mb=0.1" in switch["reason"] and index.active.trained
    assert finds_itself(index, data, 1500)


def test_without_a_lookup_the_switch_waits_for_the_rebuild(data):
    ids, vectors = data
    index = grown(data, 1000, lookup=False)
    assert index.state()["active"] == "flat"
    assert index.needs_rebuild() == "auto: switch flat -> hnsw (1000 vectors > exact_max=500)"
    index.rebuild(ids[:1000], vectors[:1000])
    assert index.state()["active"] == "hnsw" and index.needs_rebuild() is None
    assert index.state()["switches"][0]["at_count"] == 1000


def test_reopening_keeps_the_active_kind_and_its_history(data, tmp_path):
    ids, vectors = data
    params = {"exact_max": "500", "hnsw.M": "8"}
    for n in (300, 1000):
        index = grown(data, n)
        index.save(tmp_path / f"auto-{n}.idx")
        reopened = AutoIndex.load(tmp_path / f"auto-{n}.idx", DIM, **params)
        reopened.attach_vectors(ArrayLookup(ids, vectors))
        assert reopened.state() == index.state()
        queries = vectors[:50] + 0.1
        assert (reopened.search(queries, 5)[1] == index.search(queries, 5)[1]).all()


def test_rebuilding_a_shrunk_collection_goes_back_to_exact(data):
    ids, vectors = data
    index = grown(data, 1000)
    index.remove(ids[200:1000])
    index.rebuild(ids[:200], vectors[:200])
    assert [s["to"] for s in index.state()["switches"]] == ["hnsw", "flat"]
    assert index.state()["active"] == "flat" and finds_itself(index, data, 200)


def test_options_of_other_kinds_need_their_prefix():
    with pytest.raises(BadInput, match=r"must start with hnsw\. or ivfpq\."):
        AutoIndex(DIM, **{"flat.x": "1"})
    with pytest.raises(BadInput, match="unknown option 'bogus'"):
        AutoIndex(DIM, **{"hnsw.bogus": "1"})
    with pytest.raises(BadInput, match="unknown option 'M'"):
        AutoIndex(DIM, M=8)


def test_choice_by_size_and_budget_at_real_dimensions():
    auto = AutoIndex(512)
    assert [auto.choose(n)[0] for n in (10_000, 100_000, 1_000_000)] == ["flat", "hnsw", "hnsw"]
    budget = AutoIndex(512, memory_mb=1024)
    assert [budget.choose(n)[0] for n in (10_000, 100_000, 1_000_000)] == [
        "flat", "hnsw", "ivfpq",
    ]  # fmt: skip
    assert AutoIndex(512, ivfpq_min=500_000).choose(600_000)[0] == "ivfpq"
