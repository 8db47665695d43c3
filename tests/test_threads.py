"""One Engine and one Collection shared by request threads, with writers beside them.

The stress runs in child processes under ``python -X faulthandler``: a crash inside FAISS (two
threads replaying into one index) kills only the child, and its traceback is in the failure.
``HUBSEARCH_STRESS_SECONDS`` makes the run longer than CI's few seconds per index kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import CollectionNotFound, Engine

PROCS = Path(__file__).parent / "procs"
SECONDS = float(os.environ.get("HUBSEARCH_STRESS_SECONDS", "5"))
KINDS = {
    "flat": {},
    "hnsw": {},
    "ivfpq": {"nlist": 16, "train_min": 1024},  # trained from the start, retrained as it grows
    "auto": {"exact_max": 5000},  # switches from flat to a graph while threads search
}

sys.path.insert(0, str(PROCS))
from thread_stress import SEEDS, seed_vectors  # noqa: E402


def _stress(home: Path, name: str, seconds: float) -> tuple[dict, dict]:
    def child(role: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-X", "faulthandler", str(PROCS / "thread_stress.py"), role,
             str(home), name, str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    threads, writer = child("run"), child("write")
    results = []
    for proc in (threads, writer):
        out, err = proc.communicate(timeout=seconds + 240)
        assert proc.returncode == 0, f"{proc.args[3]} exited {proc.returncode}:\n{err[-4000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0], results[1]


@pytest.mark.parametrize("kind", list(KINDS))
def test_threads_and_a_writing_process_share_one_collection_safely(tmp_path, kind):
    home = tmp_path / "home"
    col = Engine(home).create(
        "desk", encoder="precomputed", index=kind, options={"dim": 64}, index_options=KINDS[kind]
    )
    col.add(
        vectors=seed_vectors(),
        ids=[f"s{i}" for i in range(SEEDS)],
        metadata=[{"half": i % 2} for i in range(SEEDS)],
    )
    inside, outside = _stress(home, "desk", SECONDS)

    assert inside["problems"] == []
    assert inside["searches"] > 50 and inside["thread_batches"] >= 3
    assert outside["process_batches"] >= 3

    fresh = Engine(home).open("desk")
    m = fresh.manifest
    live = fresh.store.live_ids(m.generation)
    assert fresh.count() == len(live) == fresh.store.count(m.generation)
    assert np.array_equal(np.sort(fresh.view.load_index().ids()), live)
    # The in-memory index of a process that followed the writers holds exactly the live ids.
    col.view.refresh()
    assert np.array_equal(np.sort(col.view.load_index().ids()), live)
    seeds = seed_vectors()
    for i in range(0, SEEDS, 97):
        for where in ({"half": i % 2}, None):
            got = [h.id for h in fresh.search(vector=seeds[i], k=10, where=where)]
            again = [h.id for h in col.search(vector=seeds[i], k=10, where=where)]
            if where is not None or kind == "flat":
                assert got[0] == f"s{i}" and got == again
            else:
                assert len(set(got) & set(again)) >= 8


def test_engine_open_shares_one_handle_and_a_dropped_handle_stops_serving(tmp_path):
    engine = Engine(tmp_path / "home")
    col = engine.create("faq", encoder="precomputed", index="flat", options={"dim": 4})
    x = np.eye(4, dtype=np.float32)
    col.add(vectors=x[:2], ids=["old-a", "old-b"])
    assert engine.open("faq") is col

    other = Engine(tmp_path / "home")  # another process, in effect
    other.drop("faq")
    with pytest.raises(CollectionNotFound, match="dropped"):
        col.search(vector=x[0], k=1)
    again = other.create("faq", encoder="precomputed", index="flat", options={"dim": 4})
    again.add(vectors=x, ids=["new-a", "new-b", "new-c", "new-d"])
    for call in (lambda: col.search(vector=x[0], k=1), col.count, lambda: col.get(["old-a"])):
        with pytest.raises(CollectionNotFound, match="dropped and created anew"):
            call()
    fresh = engine.open("faq")
    assert fresh is not col and fresh.count() == 4
    assert [h.id for h in fresh.search(vector=x[0], k=1)] == ["new-a"]


def test_collections_without_an_identity_keep_working_and_get_one_on_write(tmp_path):
    engine = Engine(tmp_path / "home")
    col = engine.create("old", encoder="precomputed", index="flat", options={"dim": 4})
    path = col.folder / "manifest.json"
    data = json.loads(path.read_text())
    del data["uuid"]  # as written by earlier versions
    path.write_text(json.dumps(data))
    old, reader = Engine(tmp_path / "home").open("old"), Engine(tmp_path / "home").open("old")
    assert old.manifest.uuid is None and reader.manifest.uuid is None
    old.add(vectors=np.eye(4, dtype=np.float32)[:1], ids=["a"])
    assert old.manifest.uuid
    assert reader.count() == 1  # another handle follows: same collection, now with a uuid
    assert reader.manifest.uuid == old.manifest.uuid


def test_concurrent_first_text_queries_load_the_model_once(tmp_path, monkeypatch):
    """Request threads whose first queries arrive together share one model load."""
    from plugins.use_multilingual import bundled

    loads = []
    real = bundled.BundledModel

    def counting(*args, **kwargs):
        loads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(bundled, "BundledModel", counting)
    engine = Engine(tmp_path / "home")
    engine.create("faq", encoder="use-multilingual", index="flat")
    texts = ["Wie setze ich mein Passwort zurück?", "carte bloquée", "refund please", "退款"]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def first_query(i: int) -> None:
        col = engine.open("faq")
        barrier.wait()
        results[i] = col.encoder.encode([texts[i]], "text")[0]

    threads = [threading.Thread(target=first_query, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    # A second open of the collection, from any thread, costs no model load.
    assert engine.open("faq").encoder is engine.open("faq").encoder
    engine.open("faq").search("Passwort vergessen", k=1)
    assert len(loads) == 1
    single = Engine(tmp_path / "home").shared_encoder("use-multilingual").encode(texts, "text")
    for i in range(len(texts)):
        assert float(results[i] @ single[i]) > 0.99999
