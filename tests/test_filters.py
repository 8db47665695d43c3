"""The `where` language: every operator, injection attempts, and k hits under selective filters."""

from __future__ import annotations

import numpy as np
import pytest

from engine import BadInput

DOCS = [
    ("a", {"lang": "de", "year": 2019, "tag": ["billing", "card"], "vip": True}),
    ("b", {"lang": "en", "year": 2021, "tag": ["card"], "vip": False}),
    ("c", {"lang": "fr", "year": 2023, "tag": ["transfer"]}),
    ("d", {"lang": "en", "year": 2020, "tier": {"level": "gold"}}),
    ("e", {"lang": "de'; DROP TABLE documents; --", "year": 2024}),
]


@pytest.fixture(scope="module")
def col(tmp_path_factory, fake_site):
    from engine import Engine
    from engine.registry import Registry

    eng = Engine(tmp_path_factory.mktemp("filters"), registry=Registry())
    col = eng.create("f", encoder="fake-hash", options={"dim": 16})
    col.add(
        texts=[f"document {i}" for i, _ in DOCS],
        ids=[i for i, _ in DOCS],
        metadata=[m for _, m in DOCS],
    )
    return col


def ids(col, where):
    return sorted(h.id for h in col.search("document", k=10, where=where))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"lang": "de"}, ["a"]),
        ({"lang": {"$eq": "en"}}, ["b", "d"]),
        ({"lang": {"$ne": "en"}}, ["a", "c", "e"]),
        ({"year": {"$gt": 2020}}, ["b", "c", "e"]),
        ({"year": {"$gte": 2020}}, ["b", "c", "d", "e"]),
        ({"year": {"$lt": 2020}}, ["a"]),
        ({"year": {"$lte": 2020}}, ["a", "d"]),
        ({"year": {"$gte": 2020, "$lt": 2023}}, ["b", "d"]),
        ({"lang": {"$in": ["fr", "de"]}}, ["a", "c"]),
        ({"lang": {"$nin": ["fr", "de"]}}, ["b", "d", "e"]),
        ({"tag": "card"}, ["a", "b"]),
        ({"tag": {"$in": ["transfer", "billing"]}}, ["a", "c"]),
        ({"vip": True}, ["a"]),
        ({"tier.level": "gold"}, ["d"]),
        ({"tag": {"$exists": False}}, ["d", "e"]),
        ({"$and": [{"lang": "en"}, {"year": {"$gt": 2020}}]}, ["b"]),
        ({"$or": [{"lang": "fr"}, {"year": 2019}]}, ["a", "c"]),
        ({"$or": [{"lang": "fr"}, {"$and": [{"lang": "en"}, {"vip": False}]}]}, ["b", "c"]),
        ({"lang": "en", "year": 2020}, ["d"]),
    ],
)
def test_operator_semantics(col, where, expected):
    assert ids(col, where) == expected


def test_injection_in_values_and_field_names_is_inert(col):
    assert ids(col, {"lang": "de'; DROP TABLE documents; --"}) == ["e"]
    assert ids(col, {"lang": "x' OR '1'='1"}) == []
    with pytest.raises(BadInput, match="no document has the field"):
        col.search("document", where={"lang') OR 1=1 --": "x"})
    assert col.count() == 5 and len(col.search("document", k=10)) == 5


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"lang": {"$regex": "d.*"}}, "unknown operator '\\$regex'"),
        ({"$not": {"lang": "de"}}, "unknown operator '\\$not'"),
        ({"$or": {"lang": "de"}}, "\\$or takes a non-empty list"),
        ({"lang": {"$in": "de"}}, "\\$in on 'lang' takes a list"),
        ({"year": {"$gt": [1]}}, "takes a string, number"),
        ({"missing": 1}, "no document has the field 'missing'"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_filters_name_the_problem(col, where, message):
    with pytest.raises(BadInput, match=message):
        col.search("document", where=where)


@pytest.mark.slow
def test_selective_and_broad_filters_return_k_hits_on_100k(tmp_path, fake_site):
    from engine import Engine
    from engine.registry import Registry

    eng = Engine(tmp_path, registry=Registry())
    col = eng.create("big", encoder="precomputed", options={"dim": 32})
    rng = np.random.default_rng(1)
    n = 100_000
    x = rng.normal(size=(n, 32)).astype(np.float32)
    rare = rng.choice(n, size=100, replace=False)  # 0.1 %
    meta = [{"bucket": int(i % 20)} for i in range(n)]
    for i in rare:
        meta[i]["rare"] = True
    col.add(vectors=x, ids=[str(i) for i in range(n)], metadata=meta)
    q = rng.normal(size=32).astype(np.float32)
    hits = col.search(vector=q, k=50, where={"rare": True})
    assert len(hits) == 50 and all(h.metadata.get("rare") for h in hits)
    exact = set(rare[np.argsort(-(x[rare] / np.linalg.norm(x[rare], axis=1)[:, None]) @ q)[:50]])
    assert {int(h.id) for h in hits} == {int(i) for i in exact}
    broad = col.search(vector=q, k=100, where={"bucket": {"$lt": 10}})  # 50 %
    assert len(broad) == 100 and all(h.metadata["bucket"] < 10 for h in broad)


@pytest.mark.parametrize(
    ("index", "index_options"),
    [
        ("flat", {}),
        ("hnsw", {"M": 8, "efConstruction": 20}),
        ("ivfpq", {"nlist": 8, "pq": 4, "nbits": 4, "train_min": 500}),
    ],
)
def test_selective_filters_are_exact_and_copy_vectors_only_without_a_full_copy(
    tmp_path, fake_site, index, index_options
):
    """Selective filters are scored exactly; flat and hnsw score in their own storage, so the
    query process holds no second copy of the vectors (ivfpq keeps codes and must read them)."""
    from engine import Engine
    from engine.registry import Registry

    eng = Engine(tmp_path, registry=Registry())
    col = eng.create(
        "sel", encoder="precomputed", index=index, options={"dim": 16}, index_options=index_options
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    col.add(
        vectors=x, ids=[str(i) for i in range(2000)], metadata=[{"b": i % 20} for i in range(2000)]
    )
    col.delete(ids=["3", "23"])  # deleted members of the bucket must not come back
    col = eng.open("sel")
    for q in x[:5]:
        hits = col.search(vector=q, k=10, where={"b": 3})
        members = np.array([i for i in range(3, 2000, 20) if i not in (3, 23)])
        want = members[np.argsort(-(x[members] @ q), kind="stable")[:10]]
        assert [int(h.id) for h in hits] == want.tolist()
    held = col.planner.cached_vector_bytes
    assert held == 0 if index in ("flat", "hnsw") else held == 100 * 16 * 4 - 2 * 16 * 4


def test_threads_missing_the_filter_cache_at_once_query_the_store_once(tmp_path, monkeypatch):
    """A new generation empties the filter cache for every filter; the search threads that
    miss it together wait for one store query instead of each running it (under a stream of
    adds in a server, that query ran once per thread per filter per commit)."""
    import threading
    import time

    from engine import Engine
    from engine.registry import Registry

    col = Engine(tmp_path, registry=Registry()).create(
        "herd", encoder="precomputed", index="flat", options={"dim": 8}
    )
    x = np.random.default_rng(5).normal(size=(400, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = [{"b": i % 4} for i in range(400)]
    col.add(vectors=x, ids=[str(i) for i in range(400)], metadata=meta)
    query = col.store.matching_ids
    calls = []

    def slow_query(where, gen, **kw):
        calls.append(where)
        time.sleep(0.3)  # long enough for every thread to miss the cache meanwhile
        return query(where, gen, **kw)

    monkeypatch.setattr(col.store, "matching_ids", slow_query)
    results: list = [None] * 6
    start = threading.Barrier(6)

    def search(t: int) -> None:
        start.wait()
        results[t] = [h.id for h in col.search(vector=x[t], k=5, where={"b": 1})]

    threads = [threading.Thread(target=search, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [{"b": 1}]
    for t, got in enumerate(results):
        members = np.arange(1, 400, 4)
        want = members[np.argsort(-(x[members] @ x[t]), kind="stable")[:5]]
        assert got == [str(i) for i in want]
