"""`tune --full` (stage 2) with the real `use-multilingual` encoder, and exporting the result.

A small real run (a BANKING77 slice, two epochs): the tuned encoder's vectors differ from the
base ones, search uses them, documents added later go through them, the fingerprint covers the
weights, untune restores the base space, and the exported SavedModel gives the query path's
vectors in a process that never imports hubsearch. Encoders that cannot train refuse in one
line and change nothing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BadInput

BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"
#: Close neighbours (the frozen encoder confuses them), so training has something to improve.
INTENTS = (
    "card_arrival",
    "card_delivery_estimate",
    "card_not_working",
    "card_swallowed",
    "lost_or_stolen_card",
    "top_up_failed",
    "top_up_reverted",
    "pending_top_up",
)

pytestmark = pytest.mark.skipif(not BANKING77.is_dir(), reason="needs ../shared/data/banking77")


def slice_of(name: str, per_intent: int) -> tuple[list[str], list[str]]:
    seen: dict[str, int] = {}
    texts, intents = [], []
    with open(BANKING77 / name, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            c = row["category"]
            if c in INTENTS and seen.get(c, 0) < per_intent:
                seen[c] = seen.get(c, 0) + 1
                texts.append(row["text"])
                intents.append(c)
    return texts, intents


def bank(home: Path):
    """A use-multilingual collection of 12 training utterances of each of INTENTS."""
    from engine import Engine

    texts, intents = slice_of("train.csv", 12)
    col = Engine(home).create("bank", encoder="use-multilingual", index="flat")
    col.add(
        texts=texts,
        ids=[f"d{i}" for i in range(len(texts))],
        metadata=[{"intent": i} for i in intents],
    )
    return col


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, fake_site):
    """A use-multilingual collection after `tune(full=True)`: (collection, report, base space).

    ``fake_site`` first: the default registry this builds must know the fake plugin too, for
    the CLI tests that run later in the same process."""
    from engine import Engine
    from engine.tune.full import FullConfig
    from engine.tune.train import TuneConfig

    home = tmp_path_factory.mktemp("full")
    col = bank(home)
    space = col.manifest.space
    import engine.tune.run as run

    train_full = run.train_full

    during: list = []

    def add_meanwhile(*args, **kwargs):
        # While stage 2 trains no lock is held: another handle adds a document, and this
        # handle searches (in the base space, the one committed).
        Engine(home, lock_timeout=5.0).open("bank").add(
            texts=["my card is still not here"], ids=["meanwhile"]
        )
        during.append(col.search("my card is still not here", k=1, mode="vector")[0])
        return train_full(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "train_full", add_meanwhile)
        report = col.tune(
            label_field="intent",
            full=True,
            force=True,
            seed=0,
            # Stage 1 stopped early on purpose (two steps), so stage 2 has something to improve
            # and its weights are kept: the run must show a tuned encoder, not the base one.
            config=TuneConfig(epochs=1, min_steps=2),
            full_config=FullConfig(epochs=3, min_steps=10, patience=5),
        )
    assert during[0].id == "meanwhile"
    return col, report, space


def query_path(col, texts: list[str]) -> np.ndarray:
    """What a query becomes in the tuned space, rebuilt from the files the manifest names."""
    from engine.tune.head import load_head
    from engine.tune.space import TunedEncoder, load_weights

    m = col.manifest
    weights = load_weights(col.folder, m.tune["encoder"])
    encoder = TunedEncoder(col.encoder, weights, m.tune["encoder"]["sha256"])
    return load_head(col.folder, m.tune).apply(encoder.encode(texts, "text"))


def test_export_gives_the_query_path_without_hubsearch(tuned, tmp_path):
    from engine.tune.export import export_text_path

    col, _, _ = tuned
    queries = ["my new card has not come yet", "wo ist meine Karte?", "汇率是多少"]
    export_text_path(col, tmp_path / "model")
    script = (
        "import json, sys, tensorflow_text, tensorflow_hub as hub\n"
        f"layer = hub.KerasLayer({str(tmp_path / 'model')!r})\n"
        f"out = layer(__import__('tensorflow').constant({queries!r})).numpy()\n"
        "assert not any(m.split('.')[0] in ('engine', 'plugins') for m in sys.modules)\n"
        "print(json.dumps(out.tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]), np.float32)
    expected = query_path(col, queries)
    cosines = (exported * expected).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    with pytest.raises(BadInput, match="not empty"):
        export_text_path(col, tmp_path / "model")


def test_full_tune_switches_encoder_space_and_untune_restores_it(tuned):
    col, report, base_space = tuned
    m = col.manifest
    assert report.committed and report.stage1 is not None and report.encoder
    stage2 = [r for r in report.history if r.get("stage") == 2]
    assert any(r["best"] and r["epoch"] > 0 for r in stage2), stage2
    # The fingerprint covers the tuned weights (and the head).
    assert m.space["tuned_top"] == report.encoder and m.space != base_space
    # The tuned encoder's vectors differ from the base ones, and the index holds them.
    ids = col.store.live_ids(m.generation)[:10]
    base = col.view.vectors.get(ids)
    tuned_vectors = col.view.tuned.get(ids)
    assert (base * tuned_vectors).sum(axis=1).max() < 0.9999
    assert np.allclose(col.view.index_vectors.get(ids), col.view.head.apply(tuned_vectors))
    # Search encodes through the tuned weights and the head.
    query = "my new card has not come yet"
    hit = col.search(query, k=1, mode="vector")[0]
    doc = col.get([hit.id])[0]
    expected = float(query_path(col, [query])[0] @ query_path(col, [doc.content])[0])
    assert abs(hit.similarity - expected) < 1e-4
    # The document added during training entered the new space in the switch.
    found = col.search("my card is still not here", k=1, mode="vector")[0]
    assert found.id == "meanwhile" and found.similarity > 0.9999
    # A document added after the tune goes through the tuned weights too.
    col.add(texts=["where is the card you sent me"], ids=["late"], metadata=[{"intent": "x"}])
    late = col.search("where is the card you sent me", k=1, mode="vector")[0]
    assert late.id == "late" and late.similarity > 0.9999
    with pytest.raises(BadInput, match="fine-tuned"):
        col.add(vectors=np.ones((1, 512), np.float32), ids=["v"])
    # Compaction drops deleted rows from the tuned log too, in the same commit; answers stay.
    col.delete([f"d{i}" for i in range(20)])
    before = [(h.id, round(h.similarity, 5)) for h in col.search(query, k=5, mode="vector")]
    col.compact()
    tuned_log = col.view.tuned.files
    assert tuned_log.base_rows == col.count() and tuned_log.tail_rows == 0
    assert sorted(p.name for p in (col.folder / "tuned").iterdir()) == [
        f"base-{tuned_log.epoch}.f32.npy", f"base-{tuned_log.epoch}.ids.npy",
        f"tail-{tuned_log.epoch}.f32",
    ]  # fmt: skip
    assert [(h.id, round(h.similarity, 5)) for h in col.search(query, k=5, mode="vector")] == before
    col.add(texts=["a card sent after the compaction"], ids=["compacted"])
    found = col.search("a card sent after the compaction", k=1, mode="vector")[0]
    assert found.id == "compacted" and found.similarity > 0.9999
    # verify checks the tuned log's checksums as it checks the exact vectors'.
    from engine import Engine

    engine = Engine(col.folder.parent)
    assert engine.verify("bank") == []
    tail = col.folder / "tuned" / f"tail-{col.manifest.tune['vectors']['epoch']}.f32"
    data = bytearray(tail.read_bytes())
    data[5] ^= 0xFF
    tail.write_bytes(bytes(data))
    try:
        problems = engine.verify("bank")
    finally:
        data[5] ^= 0xFF
        tail.write_bytes(bytes(data))
    assert len(problems) == 1 and problems[0].startswith("tuned vectors file"), problems
    assert "damaged" in problems[0] and "--reset" in problems[0]
    assert engine.verify("bank") == []
    # Untune: the base space again, no re-encoding (base vectors stayed stored).
    col.untune()
    assert col.manifest.space == base_space
    hit = col.search(query, k=1, mode="vector")[0]
    plain = col.encoder.encode([query, col.get([hit.id])[0].content], "text")
    assert abs(hit.similarity - float(plain[0] @ plain[1])) < 1e-4
    # The next writer clears the tuned log and weights no generation names any more.
    col.add(texts=["one more"], ids=["more"])
    assert not list(col.folder.glob("tune-encoder-*")) and not any((col.folder / "tuned").iterdir())


def test_encoders_that_cannot_train_refuse_full_in_one_line(tmp_path, fake_site):
    from engine import Engine

    eng = Engine(tmp_path)
    col = eng.create("vecs", encoder="precomputed", index="flat", options={"dim": 4})
    rng = np.random.default_rng(0)
    col.add(
        vectors=rng.normal(size=(20, 4)),
        ids=[str(i) for i in range(20)],
        metadata=[{"intent": f"i{i % 2}"} for i in range(20)],
    )
    gen = col.manifest.generation
    with pytest.raises(BadInput, match="does not encode text") as err:
        col.tune(label_field="intent", full=True)
    assert "\n" not in str(err.value) and col.manifest.generation == gen
    folder = tmp_path / "savedmodel"
    folder.mkdir()
    hub = eng.create("hubbed", encoder="use-multilingual", options={"handle": str(folder)})
    with pytest.raises(BadInput, match="source=hub"):
        hub.tune(label_field="intent", full=True)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["head-saved", "before-rename", "after-rename"])
def test_a_crash_in_the_full_tune_commit_leaves_one_consistent_space(tmp_path, fake_site, point):
    from engine import Engine

    col = bank(tmp_path)
    gen, space = col.manifest.generation, col.manifest.space
    worker = Path(__file__).parent / "procs" / "tune_worker.py"
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), "bank", point, "full"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr[-2000:]
    col = Engine(tmp_path).open("bank")  # as a new process would
    m = col.manifest
    tuned = point == "after-rename"
    assert (m.generation, m.space == space) == (gen + tuned, not tuned)
    assert ("tuned_top" in m.space) == tuned
    live = col.store.live_ids(m.generation)
    found, stored = col.view.load_index().stored_vectors(live[:20])
    expected = col.view.vectors.get(found)
    if tuned:
        expected = col.view.head.apply(col.view.tuned.get(found))
    assert np.allclose(stored, expected, atol=1e-5)  # the index is wholly in one space
    # The next writer removes what the killed commit left; the collection works on.
    col.add(texts=["my card is still not here"], ids=["after"])
    assert col.search("my card is still not here", k=1, mode="vector")[0].id == "after"
    weights = [p.name for p in col.folder.glob("tune-encoder-*")]
    assert weights == ([m.tune["encoder"]["file"]] if tuned else [])
    logs = {p.name.split("-")[1].split(".")[0] for p in (col.folder / "tuned").iterdir()}
    assert logs == ({str(m.tune["vectors"]["epoch"])} if tuned else set())
