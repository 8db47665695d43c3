"""Inputs built to break the engine: each is refused as one line from the error hierarchy (or
served correctly) before anything is written, and the collection keeps exactly what it held.

Issue 11, section 2, items 4 (unbounded k, SQL parameter limits) and 6 (inputs that escaped the
hierarchy as RecursionError, MemoryError, OverflowError, SQLite errors or a silent zero vector).
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import event

import engine.store
from engine import BadInput, CorruptCollection
from engine.cli import cli
from engine.limits import MAX_K, MAX_TEXT_BYTES, MAX_WHERE_TERMS

N = 3_000
DIM = 8
#: The host-parameter limit of SQLite before 3.32, and of builds that keep it.
OLD_LIMIT = 999


@pytest.fixture
def low_limit(monkeypatch):
    """Every connection any Store opens from here on allows only OLD_LIMIT bound parameters."""
    make = engine.store.connect

    def connect(url):
        eng = make(url)

        @event.listens_for(eng, "connect")
        def _limit(dbapi_conn, _record):
            dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_LIMIT)

        return eng

    monkeypatch.setattr(engine.store, "connect", connect)


@pytest.fixture
def vecs(engine):
    col = engine.create("vecs", encoder="precomputed", index="flat", options={"dim": DIM})
    x = np.random.default_rng(7).normal(size=(N, DIM)).astype(np.float32)
    col.add(
        vectors=x,
        ids=[f"d{i}" for i in range(N)],
        metadata=[{"n": i, "tag": f"t{i % 5}", "even": i % 2 == 0} for i in range(N)],
    )
    col.x = x
    return col


def held(col) -> tuple:
    """What a collection holds: its generation, count, every document, and its vector files."""
    m = col.manifest
    docs = col.get([f"d{i}" for i in range(N)] + ["extra", "big", "tiny"])
    files = sorted((p.name, p.stat().st_size) for p in (col.folder / "vectors").iterdir())
    return (
        m.generation,
        col.count(),
        [None if d is None else (d.id, d.content, d.metadata) for d in docs],
        files,
    )


# -- item 4: k and SQL parameter limits --------------------------------------------------------


def test_k_over_the_cap_is_refused_with_the_limit_and_how_to_raise_it(vecs):
    before = held(vecs)
    for k in (2**40, 50_000_000, MAX_K + 1):
        with pytest.raises(BadInput, match=rf"k={k} is over the limit of {MAX_K}.*max_k"):
            vecs.search(vector=vecs.x[0], k=k)
        with pytest.raises(BadInput, match=f"limit of {MAX_K}"):
            vecs.search_many(vectors=vecs.x[:2], k=k)
    assert len(vecs.search(vector=vecs.x[0], k=MAX_K)) == N  # the cap itself is allowed
    vecs.max_k = 2**40
    hits = vecs.search(vector=vecs.x[0], k=2**40)  # raised: legal, and clamped to N
    assert len(hits) == N and hits[0].id == "d0"
    assert held(vecs) == before


def test_a_legal_k_allocates_for_the_documents_there_are_not_for_k(engine):
    col = engine.create("small", encoder="precomputed", index="flat", options={"dim": DIM})
    x = np.random.default_rng(1).normal(size=(100, DIM))
    col.add(vectors=x, ids=[f"s{i}" for i in range(100)])
    col.max_k = 5_000_000
    col.search(vector=x[0], k=10)  # load the index outside the measurement
    tracemalloc.start()
    try:
        hits = col.search(vector=x[0], k=5_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(hits) == 100 and hits[0].id == "s0"
    assert peak < 2 * 2**20  # unclamped: 60 MB of result arrays for 100 documents


def test_low_parameter_limit_large_k_in_nin_get_delete(low_limit, engine, vecs, monkeypatch):
    # the limit is really in force
    with vecs.store.engine.connect() as conn, pytest.raises(Exception, match="too many SQL"):
        conn.exec_driver_sql(f"SELECT 1 WHERE 1 IN ({','.join('?' * 1000)})", (1,) * 1000)
    q = vecs.x[0]
    hits = vecs.search(vector=q, k=2_500)
    assert len({h.id for h in hits}) == 2_500 and hits[0].id == "d0"

    wanted = set(range(0, N, 2))  # 1,500 values
    hits = vecs.search(vector=q, k=N, where={"n": {"$in": sorted(wanted)}})
    assert {h.metadata["n"] for h in hits} == wanted
    hits = vecs.search(vector=q, k=N, where={"n": {"$nin": sorted(wanted)}})
    assert {h.metadata["n"] for h in hits} == set(range(N)) - wanted
    nested = {"$or": [{"n": {"$nin": list(range(N - 1_200))}}, {"tag": {"$in": ["t0"]}}]}
    expect = {i for i in range(N) if i >= N - 1_200 or i % 5 == 0}
    assert {h.metadata["n"] for h in vecs.search(vector=q, k=N, where=nested)} == expect

    # the broad plan: many candidates checked against the filter in the store
    monkeypatch.setattr("engine.search.SELECTIVE_LIMIT", 10)
    vecs.planner.clear_cache()
    hits = vecs.search(vector=q, k=1_400, where={"even": True})
    assert len(hits) == 1_400 and all(h.metadata["n"] % 2 == 0 for h in hits)

    ids = [f"d{i}" for i in range(2_000)]
    assert [d.id for d in vecs.get(ids)] == ids
    assert vecs.delete(ids[:1_200]) == 1_200
    assert vecs.count() == N - 1_200 and vecs.get(["d0", "d1999"])[0] is None
    assert engine.open("vecs").count() == N - 1_200


# -- item 6: filters ---------------------------------------------------------------------------


def nested_where(depth: int) -> dict:
    where: dict = {"n": 1}
    for _ in range(depth):
        where = {"$and": [where]}
    return where


def nested_where_json(depth: int) -> str:
    """As JSON text (json.dumps itself recurses too deep for it)."""
    return '{"$and": [' * depth + '{"n": 1}' + "]}" * depth


def test_a_where_nested_3000_deep_is_refused_as_bad_input(vecs):
    before = held(vecs)
    for where in (nested_where(3_000), nested_where_json(3_000)):
        with pytest.raises(BadInput, match="where: nested deeper than 32 levels"):
            vecs.search(vector=vecs.x[1], k=3, where=where)
    assert vecs.search(vector=vecs.x[1], k=3, where=nested_where(15))[0].id == "d1"
    assert held(vecs) == before


def test_an_or_of_40000_branches_is_refused_and_the_limit_itself_works(low_limit, vecs):
    before = held(vecs)
    branches = [{"n": i} for i in range(40_000)]
    with pytest.raises(BadInput, match=f"more than {MAX_WHERE_TERMS} conditions.*\\$in"):
        vecs.search(vector=vecs.x[0], k=3, where={"$or": branches})
    # at the limit, with values of every kind, it runs even under 999 parameters
    at_limit = {"$or": [{"n": {"$in": [i, "x", None]}} for i in range(MAX_WHERE_TERMS)]}
    hits = vecs.search(vector=vecs.x[0], k=N, where=at_limit)
    assert {h.metadata["n"] for h in hits} == set(range(MAX_WHERE_TERMS))
    assert held(vecs) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"n": {"$in": [1, 10**400]}}, "integer beyond the range of a float"),
        ({"n": {"$gt": -(10**309)}}, "integer beyond the range of a float"),
        ({1: "x"}, "field names are strings"),
    ],
)
def test_filters_that_overflowed_or_crashed_are_bad_input(vecs, where, message):
    with pytest.raises(BadInput, match=message):
        vecs.search(vector=vecs.x[0], k=3, where=where)


def test_cli_where_nested_3000_deep_is_one_line(engine, vecs):
    result = CliRunner().invoke(
        cli,
        [
            "--home",
            str(engine.home),
            "search",
            "vecs",
            "x",
            "--where",
            nested_where_json(3_000),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: where: nested deeper than 32 levels of objects and lists"
    ]


# -- item 6: metadata, texts, vectors ----------------------------------------------------------


def nested_value(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_metadata_nested_3000_deep_is_refused_naming_the_item(vecs):
    before = held(vecs)
    for depth in (3_000, 40):
        with pytest.raises(BadInput, match=r"item 1 \(id 'extra'\): metadata nests .* 32 levels"):
            vecs.add(
                vectors=np.ones((2, DIM)),
                ids=["big", "extra"],
                metadata=[{}, {"deep": nested_value(depth)}],
            )
    for huge in ({"n": 10**400}, {"n": [1, {"m": -(10**309)}]}):  # JSON integers have no bound
        with pytest.raises(BadInput, match=r"item 0 \(id 'extra'\): metadata holds an integer"):
            vecs.add(vectors=np.ones((1, DIM)), ids=["extra"], metadata=[huge])
    assert held(vecs) == before
    vecs.add(vectors=np.ones((1, DIM)), ids=["extra"], metadata=[{"deep": nested_value(30)}])
    assert vecs.get(["extra"])[0].metadata == {"deep": nested_value(30)}


def test_a_text_over_the_limit_is_refused_before_its_vector_is_written(engine):
    col = engine.create("texts", encoder="fake-hash", index="flat", options={"dim": 64})
    col.add(texts=["reset my card pin"], ids=["pin"])
    before = (col.manifest.generation, col.count(), _vector_bytes(col))
    huge = "word " * (MAX_TEXT_BYTES // 5 + 1)
    with pytest.raises(BadInput, match=r"text item 1: text is 16,777,2\d\d bytes .* 16 MiB"):
        col.add(texts=["fine", huge], ids=["fine", "huge"])
    with pytest.raises(BadInput, match="over the limit of 16 MiB"):
        col.search(huge)
    assert (col.manifest.generation, col.count(), _vector_bytes(col)) == before
    two_mb = "ticket " * 300_000  # well past 1 MB, within the limit
    col.add(texts=[two_mb], ids=["long"])
    assert col.get(["long"])[0].content == two_mb and col.count() == 2


def _vector_bytes(col) -> int:
    return sum(p.stat().st_size for p in (col.folder / "vectors").iterdir())


def test_vectors_whose_norm_overflows_float32_are_normalised_not_zeroed(vecs):
    big = np.full((1, DIM), 3e38, dtype=np.float32)  # finite, norm 8.5e38 > float32 max
    tiny = np.full((1, DIM), 1e-30, dtype=np.float32)  # norm below the old 1e-12 floor
    tiny[0, 0] = -1e-30
    vecs.add(vectors=np.concatenate([big, tiny]), ids=["big", "tiny"])
    stored = vecs.view.vectors.get(np.array([N, N + 1]))
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    top = vecs.search(vector=np.ones(DIM), k=1)[0]
    assert top.id == "big" and top.score == pytest.approx(1.0, abs=1e-5)
    assert vecs.search(vector=big[0], k=1)[0].id == "big"  # as a query, too
    assert vecs.search(vector=tiny[0], k=1)[0].id == "tiny"


def test_a_collection_name_ending_in_a_newline_is_refused(engine, vecs):
    for name in ("faq\n", "vecs\n"):
        with pytest.raises(BadInput, match=r"collection name .* is not allowed"):
            engine.create(name, encoder="precomputed", options={"dim": DIM})
        with pytest.raises(BadInput, match="is not allowed"):
            engine.open(name)
    assert engine.list() == ["vecs"]


# -- item 6: the manifest ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: [], "not a JSON object"),
        (lambda m: {**m, "vectors": {**m["vectors"], "tail_rows": -5}}, "'tail_rows' is -5"),
        (lambda m: {**m, "count": "many"}, "'count' is 'many'"),
        (lambda m: {**m, "encoder": []}, "'encoder' is missing or not an object"),
        (lambda m: {**m, "snapshot_crc32": 2**40}, "'snapshot_crc32'"),
    ],
)
def test_a_malformed_manifest_is_corrupt_collection_naming_the_file(engine, vecs, edit, message):
    before = held(vecs)
    path = vecs.folder / "manifest.json"
    good = path.read_bytes()
    path.write_text(json.dumps(edit(json.loads(good))))
    for call in (lambda: engine.open("vecs"), lambda: engine.info("vecs")):
        with pytest.raises(CorruptCollection) as caught:
            call()
        assert str(path) in str(caught.value) and message in str(caught.value)
        assert "\n" not in str(caught.value)
    path.write_bytes(good)  # nothing else was touched
    assert held(engine.open("vecs")) == before


# -- item 6: files read by `hubsearch add` -----------------------------------------------------


@pytest.fixture
def run(engine, fake_site):
    def invoke(*args: str):
        return CliRunner().invoke(
            cli, ["--home", str(engine.home), *args], catch_exceptions=False, prog_name="hubsearch"
        )

    assert invoke("create", "kb", "--encoder", "fake-hash", "-o", "dim=64").exit_code == 0
    return invoke


def _count(run) -> int:
    return json.loads(run("info", "kb", "--json").output)["count"]


def test_cli_a_deeply_nested_jsonl_line_is_one_line_with_file_and_line(run, tmp_path):
    path = tmp_path / "kb.jsonl"
    for depth in (3_000, 100):
        deep = '{"text": "hello", "tags": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
        path.write_text(json.dumps({"text": "fine"}) + "\n" + deep + "\n")
        result = run("add", "kb", str(path))
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            "Error: kb.jsonl:2: nests objects and lists deeper than 32 levels"
        ]
    assert _count(run) == 0


def test_cli_csv_cells_as_long_as_a_text_may_be(run, tmp_path):
    path = tmp_path / "tickets.csv"
    long_body = " ".join(["printer"] * 40_000)  # 320 KB: past the csv module's 128 KiB default
    path.write_text(f"id,body\nT1,short one\nT2,{long_body}\n")
    assert run("add", "kb", str(path), "--text-field", "body").exit_code == 0
    assert _count(run) == 2
    got = json.loads(run("get", "kb", "T2", "--json").output)
    assert got["content"] == long_body

    path.write_text(f"id,body\nT3,fine\nT4,{'x' * (MAX_TEXT_BYTES + 1)}\n")
    result = run("add", "kb", str(path), "--text-field", "body")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: tickets.csv:3: ")
    assert _count(run) == 2


def test_cli_a_jsonl_text_over_the_limit_names_file_and_line(run, tmp_path):
    path = tmp_path / "kb.jsonl"
    rows = [{"text": "fine"}, {"text": "é" * (MAX_TEXT_BYTES // 2 + 1)}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    result = run("add", "kb", str(path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: kb.jsonl:2: text is {MAX_TEXT_BYTES + 2:,} bytes of UTF-8, over the limit of "
        f"16 MiB; split it into several documents"
    ]
    assert _count(run) == 0
