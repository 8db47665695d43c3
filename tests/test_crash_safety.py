"""Kill a writer with SIGKILL at random moments; the collection must always reopen consistent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "procs" / "add_worker.py"
TOTAL, CHUNK = 50_000, 5_000


def check_consistent(engine, name: str, acked: int) -> int:
    col = engine.open(name)
    m = col.manifest
    live = col.store.live_ids(m.generation)
    index_ids = np.sort(col.view.load_index().ids())
    assert np.array_equal(live, index_ids), "store and index disagree on ids"
    assert m.count == len(live)
    assert len(live) >= acked, "an acknowledged add is missing"
    sample = [f"d{i}" for i in random.sample(range(acked), min(acked, 50))]
    assert all(d is not None for d in col.get(sample))
    for ext in sample[:5]:
        vec = col.view.vectors.get(np.array([col.get([ext])[0].internal_id]))[0]
        hits = col.search(vector=vec, k=10)
        assert ext in [h.id for h in hits if h.score > 0.9999]  # itself, or tied with it
    col.close()
    return len(live)


def run_worker(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(home), "crash", str(TOTAL), str(CHUNK), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


@pytest.mark.slow
def test_killed_add_leaves_collection_consistent(engine):
    engine.create("crash", encoder="fake-hash", index="flat", options={"dim": 256})
    rng = random.Random(7)
    acked = 0
    kinds = ["random"] * 7 + ["during-save"] * 5
    rng.shuffle(kinds)
    for trial, kind in enumerate(kinds):
        proc = run_worker(engine.home, *(["--slow-save"] if kind == "during-save" else []))
        deadline = time.monotonic() + (rng.uniform(0.3, 4.0) if kind == "random" else 120)
        seen_save = False
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("ACK"):
                acked = max(acked, int(line.split()[1]))
            if line.startswith("SAVING") and kind == "during-save":
                time.sleep(rng.uniform(0.0, 0.05))
                seen_save = True
                break
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        for line in out.splitlines():
            if line.startswith("ACK"):  # acked before the kill landed
                acked = max(acked, int(line.split()[1]))
        assert proc.returncode in (-signal.SIGKILL, 0), err
        if kind == "during-save":
            assert seen_save or proc.returncode == 0, f"trial {trial}: never reached a save"
        check_consistent(engine, "crash", acked)
    finished = run_worker(engine.home)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err
    assert check_consistent(engine, "crash", TOTAL) == TOTAL
    col = engine.open("crash")
    assert col.count() == TOTAL
    assert len(set(col.store.live_ids(col.manifest.generation).tolist())) == TOTAL


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_a_commit_that_fails_part_way_leaves_the_same_process_consistent(
    engine, monkeypatch, index
):
    """Disk full while committing: the writer's own in-memory index already took the rows.

    The same process must not then serve them, nor trip over their ids when it adds again
    (the failed generation's ids are handed out anew).
    """
    import engine.commit as commit

    col = engine.create("fail", encoder="precomputed", index=index, options={"dim": 8})
    x = np.eye(8, dtype=np.float32)
    col.add(vectors=x[:4], ids=["a", "b", "c", "d"])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(commit, "write_manifest", disk_full)
        with pytest.raises(OSError, match="No space"):
            col.add(vectors=x[4:6], ids=["e", "f"])
    assert col.count() == 4
    assert [h.id for h in col.search(vector=x[4], k=8) if h.score > 0.5] == []
    col.add(vectors=x[6:8], ids=["g", "h"])
    assert col.count() == 6
    assert col.search(vector=x[6], k=1)[0].id == "g"
    assert np.array_equal(
        np.sort(col.view.load_index().ids()), col.store.live_ids(col.manifest.generation)
    )
