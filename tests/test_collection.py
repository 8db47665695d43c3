"""Collections through the Python API, with the fake hashing encoder (the engine's own logic)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine import BadInput, CollectionExists, CollectionNotFound, Engine, SpaceMismatch

FAQ = {
    "pin": "how do I reset my card pin",
    "lost": "my card was lost or stolen abroad",
    "refund": "refund for a failed bank transfer",
    "fee": "why was I charged a fee for a top up",
}


@pytest.fixture
def faq(engine):
    col = engine.create("faq", encoder="fake-hash", index="flat", options={"dim": 64})
    col.add(texts=list(FAQ.values()), ids=list(FAQ), metadata=[{"n": i} for i in range(4)])
    return col


def test_search_finds_the_entry_sharing_the_words(faq):
    hits = faq.search("reset pin", k=2)
    assert hits[0].id == "pin"
    assert hits[0].content == FAQ["pin"]
    assert hits[0].metadata == {"n": 0}
    assert hits[0].score >= hits[1].score


def test_upsert_replaces_content_metadata_and_vector_without_growing(faq):
    report = faq.add(texts=["fee for sending money abroad"], ids=["pin"], metadata=[{"n": 9}])
    assert (report.added, report.updated) == (0, 1)
    assert faq.count() == 4
    doc = faq.get(["pin"])[0]
    assert doc.content == "fee for sending money abroad" and doc.metadata == {"n": 9}
    assert faq.search("reset pin", k=1)[0].id != "pin"
    assert [h.id for h in faq.search("sending money abroad", k=4)].count("pin") == 1


def test_unchanged_items_are_skipped_on_re_add(faq):
    report = faq.add(texts=list(FAQ.values()), ids=list(FAQ), metadata=[{"n": i} for i in range(4)])
    assert (report.added, report.updated, report.unchanged) == (0, 0, 4)
    assert faq.manifest.generation == 1


def test_delete_removes_from_search_get_and_index_file(engine, faq):
    assert faq.delete(["pin", "nope"]) == 1
    assert faq.count() == 3
    assert faq.get(["pin"]) == [None]
    assert all(h.id != "pin" for h in faq.search("reset pin", k=10))
    reopened = engine.open("faq")
    assert reopened.count() == 3
    import faiss

    snapshot = faq.folder / f"index-{faq.manifest.snapshot_generation}.faiss"
    index = faiss.read_index(str(snapshot))
    assert index.ntotal == 3  # the flat index file no longer holds the deleted vector


def test_reopened_collection_answers_like_the_original(engine, faq):
    before = [(h.id, round(h.score, 5)) for h in faq.search("card lost", k=4)]
    reopened = engine.open("faq")
    assert [(h.id, round(h.score, 5)) for h in reopened.search("card lost", k=4)] == before


def test_another_embedding_space_is_refused_and_nothing_changes(engine, faq):
    other = engine.build_encoder("fake-hash", {"dim": 64, "salt": "v2"})
    with pytest.raises(SpaceMismatch, match="salt"):
        engine.open_with("faq", other)
    with pytest.raises(SpaceMismatch):
        engine.open("faq", encoder_options={"salt": "v2"})
    assert engine.open("faq").count() == 4


def test_vectors_of_the_collection_width_are_accepted(faq):
    vec = faq.encoder.encode(["refund transfer"], "text")
    faq.add(vectors=vec, texts=["a refund text"], ids=["r2"])
    assert faq.search(vector=vec[0], k=1)[0].id == "r2"
    with pytest.raises(BadInput, match=r"shape \[n, 64\]"):
        faq.search(vector=np.ones(3), k=1)


def test_precomputed_collection_round_trips_vectors(engine):
    col = engine.create("vecs", encoder="precomputed", options={"dim": 8})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    col.add(
        vectors=x, ids=[f"v{i}" for i in range(50)], metadata=[{"odd": i % 2} for i in range(50)]
    )
    assert col.search(vector=x[7], k=1)[0].id == "v7"
    hits = col.search(vector=x[7], k=5, where={"odd": 0})
    assert len(hits) == 5 and all(h.metadata["odd"] == 0 for h in hits)
    with pytest.raises(BadInput, match="does not encode text"):
        col.search("text query")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": ["ok", "   "], "ids": ["a", "b"]}, "item 1 .*empty"),
        ({"texts": ["ok", None], "ids": ["a", "b"]}, "text item 1: expected a string"),
        ({"texts": ["ok", b"\xff\xfe"], "ids": ["a", "b"]}, "text item 1: bytes are not valid"),
        ({"texts": ["x", "y"], "ids": ["a", "a"]}, "duplicate id 'a'"),
        ({"texts": ["x"], "ids": ["a"], "metadata": ["nope"]}, "metadata must be an object"),
        ({"texts": ["x"], "ids": ["a"], "metadata": [{"$x": 1}]}, "metadata key"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(faq, kwargs, message):
    before = faq.manifest.generation
    with pytest.raises(BadInput, match=message):
        faq.add(**kwargs)
    assert faq.count() == 4 and faq.manifest.generation == before


def test_names_and_existence_are_checked(engine, faq):
    for bad in ["../x", "a/b", "..", ""]:
        with pytest.raises(BadInput, match="not allowed"):
            engine.create(bad, encoder="fake-hash")
    with pytest.raises(CollectionExists):
        engine.create("faq", encoder="fake-hash")
    with pytest.raises(CollectionNotFound):
        engine.open("missing")


def test_list_and_drop(engine, faq):
    engine.create("other", encoder="fake-hash")
    assert engine.list() == ["faq", "other"]
    engine.drop("faq")
    assert engine.list() == ["other"]
    with pytest.raises(CollectionNotFound):
        engine.open("faq")


def test_readers_see_commits_of_another_handle(engine, faq):
    reader = engine.open("faq")
    assert reader.search("reset pin", k=1)[0].id == "pin"
    faq.add(texts=["brand new entry about crypto"], ids=["crypto"])
    assert reader.search("crypto entry", k=1)[0].id == "crypto"
    faq.delete(["crypto"])
    assert all(h.id != "crypto" for h in reader.search("crypto entry", k=5))


def test_reindex_compact_and_checkpoint_keep_answers(engine, faq):
    before = [(h.id, round(h.score, 5)) for h in faq.search("card lost", k=4)]
    faq.add(texts=[f"filler text number {i}" for i in range(30)], ids=[f"f{i}" for i in range(30)])
    faq.delete([f"f{i}" for i in range(30)])
    tail = faq.folder / "vectors" / f"tail-{faq.manifest.vectors.epoch}.f32"
    assert tail.stat().st_size == 34 * 64 * 4  # deleted vectors are still on disk
    m = faq.compact()
    assert m.vectors.base_rows == 4 and faq.count() == 4
    assert not tail.exists()
    assert [(h.id, round(h.score, 5)) for h in faq.search("card lost", k=4)] == before
    assert m.history[-1]["event"] == "compact"
    faq.checkpoint()
    reopened = engine.open("faq")
    assert [(h.id, round(h.score, 5)) for h in reopened.search("card lost", k=4)] == before
    reopened.add(texts=["after compaction entry"], ids=["late"])
    assert faq.search("after compaction entry", k=1)[0].id == "late"


def test_modality_filter_keeps_one_kind(engine):
    col = engine.create("mixed", encoder="precomputed", options={"dim": 4})
    col.add(texts=["a text"], vectors=[[1, 0, 0, 0]], ids=["t"])
    col.add(vectors=[[1, 0.1, 0, 0]], ids=["v"], metadata=[{"lang": "de"}])
    assert [h.id for h in col.search(vector=[1, 0, 0, 0], k=2)] == ["t", "v"]
    assert [h.id for h in col.search(vector=[1, 0, 0, 0], k=2, modality="text")] == ["t"]
    assert col.search(vector=[1, 0, 0, 0], k=2, modality="image") == []
    with pytest.raises(BadInput, match="modality must be"):
        col.search(vector=[1, 0, 0, 0], modality="audio")


def test_lone_surrogates_are_bad_input_naming_the_item(faq):
    with pytest.raises(BadInput, match="text item 1: not valid Unicode"):
        faq.add(texts=["fine", "broken \ud800 text"], ids=["x", "y"])
    with pytest.raises(BadInput, match=r"item 1 \(id 'y'\): metadata is not valid Unicode"):
        faq.add(texts=["fine", "also fine"], ids=["x", "y"], metadata=[{}, {"k": "\udc80"}])
    with pytest.raises(BadInput, match="item 0: id is not valid Unicode"):
        faq.add(texts=["fine"], ids=["x\ud800"])
    with pytest.raises(BadInput, match="id 1: not valid Unicode"):
        faq.get(["x", "y\ud800"])
    with pytest.raises(BadInput, match="id 0: not valid Unicode"):
        faq.delete(ids=["y\ud800"])
    with pytest.raises(BadInput, match="not a single string"):
        faq.delete(ids="abc")  # would otherwise delete ids "a", "b" and "c"
    assert faq.count() == 4


def test_auto_is_the_default_and_records_its_switch_in_the_manifest(engine):
    col = engine.create("grow", encoder="precomputed", options={"dim": 16})
    assert col.manifest.index["kind"] == "auto"
    x = np.random.default_rng(5).normal(size=(20_500, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(len(x))]
    col.add(vectors=x[:20_000], ids=ids[:20_000])
    assert col.manifest.index["state"]["active"] == "flat"
    col.add(vectors=x[20_000:], ids=ids[20_000:])
    m = engine.open("grow").manifest
    assert m.index["state"]["active"] == "hnsw"
    switch = [h for h in m.history if h["event"] == "auto-switch"]
    assert len(switch) == 1 and switch[0]["to"] == "hnsw" and switch[0]["from"] == "flat"
    assert engine.open("grow").search(vector=x[20_100], k=1)[0].id == "v20100"


def test_re_adding_vectors_stores_exactly_the_changed_rows(engine):
    """A vectors= add writes the caller's rows as they are when consecutive, else picks them
    out: here rows 1 and 3 of a re-add changed, the others are unchanged and skipped."""
    col = engine.create("rows", encoder="precomputed", index="flat", options={"dim": 4})
    x = np.eye(4, dtype=np.float32)
    ids = ["a", "b", "c", "d"]
    col.add(vectors=x, ids=ids)
    y = x.copy()
    y[1], y[3] = x[2], x[0]  # b now points where c does, d where a does
    report = col.add(vectors=y, ids=ids)
    assert (report.added, report.updated, report.unchanged) == (0, 2, 2)
    assert sorted(h.id for h in col.search(vector=x[2], k=4) if h.score > 0.99) == ["b", "c"]
    assert sorted(h.id for h in col.search(vector=x[0], k=4) if h.score > 0.99) == ["a", "d"]
    assert col.search(vector=x[1], k=1)[0].score < 0.5  # nothing points at e1 any more


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc")
def test_a_replaying_reader_keeps_no_mapped_copy_of_the_vectors(engine):
    """A reader that rebuilt its index from the vector file must not keep the file's pages
    resident too: that was a second copy of every vector in each worker's memory."""
    col = engine.create("map", encoder="precomputed", index="flat", options={"dim": 64})
    x = np.random.default_rng(2).normal(size=(40_000, 64)).astype(np.float32)
    col.add(vectors=x, ids=[str(i) for i in range(len(x))])  # no snapshot: readers replay
    reader = engine.open("map")
    assert reader.manifest.snapshot_generation is None
    assert reader.search(vector=x[123], k=1)[0].id == "123"
    resident_kb, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line
            inside = line.endswith(".f32")
        elif inside and line.startswith("Rss:"):
            resident_kb += int(line.split()[1])
    assert resident_kb < 2 * 1024  # of a 10 MiB file


def test_indexes_of_older_collections_are_made_partial_on_the_next_write(engine):
    """Collections made before the partial indexes get them at their first write.

    With the old full index on gen_deleted, SQLite planned the upsert lookup of 500+ ids as
    a walk over every live row, once per 5,000 ids added; after the upgrade it probes ids.
    """
    import sqlite3

    col = engine.create("old", encoder="precomputed", index="flat", options={"dim": 4})
    x = np.random.default_rng(4).normal(size=(3000, 4)).astype(np.float32)
    col.add(vectors=x, ids=[f"d{i}" for i in range(3000)], metadata=[{"n": i} for i in range(3000)])
    db = sqlite3.connect(col.folder / "store.sqlite")
    db.executescript(
        "DROP INDEX documents_gen_deleted; CREATE INDEX documents_gen_deleted ON documents "
        "(gen_deleted); DROP INDEX meta_key_num; CREATE INDEX meta_key_num ON meta "
        '("key", num, doc_id);'
    )
    lookup = (
        f"EXPLAIN QUERY PLAN SELECT id FROM documents WHERE external_id IN "
        f"({','.join('?' * 500)}) AND gen_deleted IS NULL AND gen_added <= ?"
    )

    def plan():
        fresh = sqlite3.connect(col.folder / "store.sqlite")  # no statement cached from before
        try:
            return str(fresh.execute(lookup, [f"d{i}" for i in range(500)] + [99]).fetchall())
        finally:
            fresh.close()

    assert "documents_gen_deleted" in plan()  # what an older collection does
    col = Engine(engine.home, registry=engine.registry).open("old")  # a later process
    col.add(vectors=x[:1] * -1, ids=["new"])
    assert "documents_live_external_id" in plan()
    sql = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    assert "WHERE" in sql["documents_gen_deleted"] and "WHERE" in sql["meta_key_num"]
    assert col.count() == 3001
    assert [h.id for h in col.search(vector=x[7], k=1, where={"n": {"$gte": 7}})] == ["d7"]
