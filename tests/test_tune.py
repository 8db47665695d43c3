"""`tune`: a head trained on a collection's own labels, committed as one new space, abstention.

Most tests use the fake hashed bag-of-words encoder on a made-up support desk where every intent
has two key words drowned in shared filler words: the base space finds the nearest filler, a head
that learns which words matter finds the intent. One test uses the real encoder on BANKING77.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BadInput
from engine.tune.head import Head

INTENTS = 8
PER_INTENT = 24
FILLER = [f"filler{i}" for i in range(60)]


def utterance(intent: int, rng: random.Random) -> str:
    words = [f"key{intent}x{rng.randrange(2)}", *rng.sample(FILLER, 5)]
    rng.shuffle(words)
    return " ".join(words)


def desk(engine, name: str = "faq", per_intent: int = PER_INTENT, seed: int = 0):
    rng = random.Random(seed)
    col = engine.create(name, encoder="fake-hash", index="flat", options={"dim": 256})
    texts, ids, meta = [], [], []
    for i in range(INTENTS * per_intent):
        intent = i % INTENTS
        texts.append(utterance(intent, rng))
        ids.append(f"d{i}")
        meta.append({"intent": f"intent{intent}"})
    col.add(texts=texts, ids=ids, metadata=meta)
    return col


def queries(n: int, seed: int = 99) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    intents = [i % INTENTS for i in range(n)]
    return [utterance(i, rng) for i in intents], [f"intent{i}" for i in intents]


def knn1(col, texts: list[str], intents: list[str]) -> float:
    hits = col.search_many(texts, k=1)
    return float(
        np.mean([h[0].metadata["intent"] == want for h, want in zip(hits, intents, strict=True)])
    )


def test_tune_on_labels_raises_retrieval_and_commits_one_new_space(engine):
    col = desk(engine)
    texts, intents = queries(200)
    frozen = knn1(col, texts, intents)
    gen = col.manifest.generation
    fingerprint = col.manifest.space

    report = col.tune(label_field="intent", seed=1)

    assert report.committed, report.reason
    assert report.after["knn@1"] > report.before["knn@1"]
    assert {"knn@1", "recall@5", "mrr", "threshold", "answered_right"} <= set(report.after)
    assert col.manifest.generation == gen + 1  # one commit switched the space
    assert col.manifest.space == {**fingerprint, "head": report.head}
    tuned = knn1(col, texts, intents)
    assert tuned >= frozen + 0.2, (frozen, tuned)
    # Another process (a fresh engine) opens the tuned space, queries through the head.
    from engine import Engine

    other = Engine(engine.home, registry=engine.registry).open("faq")
    assert knn1(other, texts, intents) == tuned
    # The exact-vector log still holds base vectors: untune needs no encoder run.
    col.untune()
    assert col.manifest.tune is None and col.manifest.space == fingerprint
    assert knn1(col, texts, intents) == frozen
    assert knn1(other, texts, intents) == frozen


def test_documents_added_after_a_tune_go_through_the_head(engine):
    col = desk(engine)
    col.tune(label_field="intent", seed=0)
    rng = random.Random(5)
    new = [utterance(3, rng) for _ in range(5)]
    col.add(texts=new, ids=[f"new{i}" for i in range(5)], metadata=[{"intent": "intent3"}] * 5)
    hit = col.search(new[0], k=1)[0]
    assert hit.id == "new0" and hit.similarity == pytest.approx(1.0, abs=1e-5)
    # A reopened collection replays/reloads the same tuned vectors for them.
    from engine import Engine

    other = Engine(engine.home, registry=engine.registry).open("faq")
    assert other.search(new[0], k=1)[0].id == "new0"


def test_vector_queries_on_a_tuned_collection_are_base_space_vectors(engine):
    col = desk(engine)
    base = col.encoder.encode(["key2x0 filler1 filler2"], "text")
    before = col.search(vector=base[0], k=5)
    # Text queries search hybrid by default now; the vector side is what vector= must equal.
    by_text = col.search("key2x0 filler1 filler2", k=5, mode="vector")
    assert [h.id for h in before] == [h.id for h in by_text]
    col.tune(label_field="intent", seed=0)
    by_text = col.search("key2x0 filler1 filler2", k=5, mode="vector")
    by_vector = col.search(vector=base[0], k=5)
    assert [h.id for h in by_vector] == [h.id for h in by_text]
    assert [h.score for h in by_vector] == pytest.approx([h.score for h in by_text])
    # and vectors= added to a tuned collection are base-space vectors too
    col.add(vectors=base, ids=["v"], metadata=[{"intent": "intent2"}])
    assert col.search("key2x0 filler1 filler2", k=1, mode="vector")[0].id == "v"


def test_training_is_seeded_and_reproducible(engine):
    col = desk(engine)
    a = col.tune(label_field="intent", seed=3, dry_run=True)
    b = col.tune(label_field="intent", seed=3, dry_run=True)
    assert not a.committed and col.manifest.tune is None
    assert a.after == b.after
    assert [r.get("loss") for r in a.history] == [r.get("loss") for r in b.history]
    col.tune(label_field="intent", seed=3)
    first = col.manifest.tune["sha256"]
    col.untune()
    col.tune(label_field="intent", seed=3)
    assert col.manifest.tune["sha256"] == first


def test_a_head_that_does_not_help_is_not_committed_unless_forced(engine):
    col = desk(engine)
    from engine.tune.train import TuneConfig

    useless = TuneConfig(epochs=1, learning_rate=1e-9)
    report = col.tune(label_field="intent", config=useless)
    assert not report.committed and "does not beat" in report.reason
    assert col.manifest.tune is None
    forced = col.tune(label_field="intent", config=useless, force=True)
    assert forced.committed and col.manifest.tune is not None


def test_min_score_auto_uses_the_calibrated_threshold_and_answer_abstains(engine):
    col = desk(engine)
    with pytest.raises(BadInput, match="tune it"):
        col.search("key1x0 filler3", min_score="auto")
    with pytest.raises(BadInput, match="tune it"):
        col.answer("key1x0 filler3")
    assert all(h.similarity >= 0.3 for h in col.search("key1x0 filler3", min_score=0.3))
    assert col.search("key1x0 filler3", k=3, min_score=1.0) == []
    with pytest.raises(BadInput, match="min_score"):
        col.search("key1x0 filler3", min_score="high")

    report = col.tune(label_field="intent", negatives=["totally unrelated weather talk"] * 3)
    threshold = col.manifest.tune["threshold"]
    assert threshold == report.after["threshold"] and report.after["negatives_rejected"] == 1.0
    found = [col.search(t, k=50, min_score="auto", mode="vector") for t in queries(10)[0]]
    hits = [h for some in found for h in some]
    assert hits and all(h.similarity >= threshold for h in hits)
    assert all(h.similarity == h.score for h in hits)  # vector search: the score is the cosine
    everything = sum(len(col.search(t, k=50, mode="vector")) for t in queries(10)[0])
    assert sum(map(len, found)) < everything
    # Hybrid search keeps the same floor on the similarity, whatever its fused score.
    hybrid = [h for t in queries(10)[0] for h in col.search(t, k=50, min_score="auto")]
    assert hybrid and all(h.similarity is not None and h.similarity >= threshold for h in hybrid)
    assert col.answer("totally unrelated weather talk") is None
    text, intent = queries(40)
    answered = [col.answer(t) for t in text]
    right = [
        a is not None and a.metadata["intent"] == w for a, w in zip(answered, intent, strict=True)
    ]
    assert np.mean(right) >= 0.8


def test_pairs_from_a_jsonl_file_with_named_fields(engine, tmp_path):
    col = desk(engine)
    rng = random.Random(11)
    log = tmp_path / "log.jsonl"
    rows = []
    for i in range(60):
        doc = i % (INTENTS * 2)  # documents d0..d15: intents 0..7 twice
        rows.append({"question": utterance(doc % INTENTS, rng), "doc": f"d{doc}"})
    log.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    report = col.tune(pairs=str(log), query_field="question", id_field="doc", seed=0)
    assert report.mode == "pairs" and report.val_examples > 0
    assert report.after["mrr"] >= report.before["mrr"]


def test_bad_inputs_are_refused_in_one_line_and_change_nothing(engine, registry):
    col = desk(engine, per_intent=2)
    col.add(texts=["lonely"], ids=["x"], metadata=[{"intent": "rare"}])
    gen = col.manifest.generation
    with pytest.raises(BadInput, match=r"one example.*'rare'"):
        col.tune(label_field="intent")
    with pytest.raises(BadInput, match=r"no document .* 'topic'"):
        col.tune(label_field="topic")
    with pytest.raises(BadInput, match="exactly one of"):
        col.tune()
    with pytest.raises(BadInput, match=r"2 document ids .*'nope1', 'nope2'"):
        col.tune(pairs=[("key1x0", "d1")] * 10 + [("a", "nope1"), ("b", "nope2")])
    small = desk(engine, "small", per_intent=1)
    with pytest.raises(BadInput, match=r"too few labelled examples to tune: 8 .*intent0: 1"):
        small.tune(label_field="intent")
    for message in _messages(col):
        assert "\n" not in message
    assert col.manifest.generation == gen and col.manifest.tune is None
    # An encoder without text cannot take query texts (pairs, negatives); labels still work.
    vec = engine.create("vec", encoder="precomputed", options={"dim": 8})
    rng = np.random.default_rng(0)
    vec.add(
        vectors=rng.normal(size=(20, 8)),
        ids=[f"v{i}" for i in range(20)],
        metadata=[{"k": i % 2} for i in range(20)],
    )
    with pytest.raises(BadInput, match="does not encode text; tune it with label_field"):
        vec.tune(pairs=[("hello", "v1")] * 10)
    vec.tune(label_field="k", dry_run=True)


def _messages(col) -> list[str]:
    out = []
    for kwargs in ({"label_field": "intent"}, {"label_field": "topic"}):
        try:
            col.tune(**kwargs)
        except BadInput as exc:
            out.append(str(exc))
    return out


def test_searches_keep_answering_during_a_tune_and_adds_meanwhile_land_in_the_new_space(
    engine, monkeypatch
):
    col = desk(engine)
    import engine.tune.run as run

    trained = threading.Event()
    added = threading.Event()
    real_train = run.train_head

    def slow_train(*args, **kwargs):
        result = real_train(*args, **kwargs)
        trained.set()
        assert added.wait(30)  # the add below commits while training still "runs"
        return result

    monkeypatch.setattr(run, "train_head", slow_train)
    reports, errors, served = [], [], []
    tuner = threading.Thread(target=lambda: reports.append(col.tune(label_field="intent", seed=0)))
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                served.append(len(col.search("key4x1 filler1", k=3)))
            except Exception as exc:
                errors.append(exc)

    readers = [threading.Thread(target=searcher) for _ in range(2)]
    for t in readers:
        t.start()
    tuner.start()
    assert trained.wait(60)
    during = len(served)
    rng = random.Random(8)
    late = utterance(5, rng)
    col.add(texts=[late], ids=["late"], metadata=[{"intent": "intent5"}])  # no tune lock held
    added.set()
    tuner.join(60)
    stop.set()
    for t in readers:
        t.join()
    assert not errors and during > 0 and all(n == 3 for n in served)
    assert reports and reports[0].committed
    hit = col.search(late, k=1)[0]
    assert hit.id == "late" and hit.similarity == pytest.approx(1.0, abs=1e-5)
    # its indexed vector is the head of its base vector, like every other document's
    head = col.view.head
    iid = col.get(["late"])[0].internal_id
    base = col.view.vectors.get(np.array([iid]))
    assert isinstance(head, Head)
    assert np.allclose(col.view.index_vectors.get(np.array([iid])), head.apply(base))


def test_untune_of_an_untuned_collection_changes_nothing(engine):
    col = desk(engine)
    gen = col.manifest.generation
    col.untune()
    assert col.manifest.generation == gen


BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


@pytest.mark.slow
@pytest.mark.skipif(not BANKING77.is_dir(), reason="needs ../shared/data/banking77")
def test_tune_raises_knn1_on_a_banking77_slice_with_the_real_encoder(tmp_path):
    import csv

    from engine import Engine

    def read(name: str, per_intent: int) -> tuple[list[str], list[str]]:
        seen: dict[str, int] = {}
        texts, intents = [], []
        with open(BANKING77 / name, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if seen.get(row["category"], 0) < per_intent:
                    seen[row["category"]] = seen.get(row["category"], 0) + 1
                    texts.append(row["text"])
                    intents.append(row["category"])
        return texts, intents

    train, train_intents = read("train.csv", 20)
    test, test_intents = read("test.csv", 10)
    col = Engine(tmp_path).create("bank", encoder="use-multilingual", index="flat")
    col.add(
        texts=train,
        ids=[str(i) for i in range(len(train))],
        metadata=[{"intent": i} for i in train_intents],
    )
    frozen = knn1(col, test, test_intents)
    report = col.tune(label_field="intent", seed=0)
    tuned = knn1(col, test, test_intents)
    assert report.committed, report.reason
    assert tuned >= frozen + 0.02, (frozen, tuned)


@pytest.mark.parametrize("point", ["head-saved", "in-snapshot", "before-rename", "after-rename"])
def test_a_crash_in_the_tune_commit_leaves_one_consistent_space(engine, point):
    import os
    import subprocess
    import sys

    from engine import Engine

    col = desk(engine)
    texts, intents = queries(100)
    frozen = knn1(col, texts, intents)
    gen = col.manifest.generation
    worker = Path(__file__).parent / "procs" / "tune_worker.py"
    proc = subprocess.run(
        [sys.executable, str(worker), str(engine.home), "faq", point],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr

    col = Engine(engine.home, registry=engine.registry).open("faq")  # as a new process would
    m = col.manifest
    tuned = point == "after-rename"
    assert (m.tune is not None) == tuned and m.generation == gen + tuned
    live = col.store.live_ids(m.generation)
    index = col.view.load_index()
    assert np.array_equal(np.sort(index.ids()), live)
    found, stored = index.stored_vectors(live[:20])
    expected = col.view.vectors.get(found)
    if tuned:
        expected = col.view.head.apply(expected)
    assert np.allclose(stored, expected, atol=1e-5)  # the index is wholly in one space
    assert (knn1(col, texts, intents) > frozen) == tuned
    # The next writer removes what the killed commit left behind; the collection works on.
    col.add(texts=["key1x1 filler3"], ids=["after"], metadata=[{"intent": "intent1"}])
    heads = sorted(p.name for p in col.folder.glob("tune-head-*"))
    assert heads == ([m.tune["head"]] if tuned else [])
    assert not list(col.folder.glob(".*.tmp"))
    assert col.search("key1x1 filler3", k=1)[0].id == "after"


def test_upkeep_of_a_tuned_collection_stays_in_the_tuned_space(engine):
    from engine.repair import diagnose

    col = desk(engine)
    texts, intents = queries(100)
    col.tune(label_field="intent", seed=0)
    tuned = knn1(col, texts, intents)
    assert diagnose(col.folder, engine.registry) == []  # verify compares head(log) with index
    col.delete([f"d{i}" for i in range(0, 40, 2)])
    col.compact()  # rewrites the base log, rebuilds the index through the head
    col.reindex("hnsw")
    assert diagnose(col.folder, engine.registry) == []
    live = col.store.live_ids(col.manifest.generation)
    found, stored = col.view.load_index().stored_vectors(live)
    assert np.allclose(stored, col.view.head.apply(col.view.vectors.get(found)), atol=1e-5)
    assert knn1(col, texts, intents) >= tuned - 0.05
