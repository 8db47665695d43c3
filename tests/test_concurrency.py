"""One writer and several reader processes on one collection; a second writer waits, then fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import CollectionLocked

PROCS = Path(__file__).parent / "procs"


@pytest.mark.slow
def test_four_readers_never_see_half_written_state_and_see_commits(engine):
    engine.create("live", encoder="fake-hash", options={"dim": 32})
    chunk, total = 2_000, 30_000
    env = dict(os.environ)
    readers = [
        subprocess.Popen(
            [
                sys.executable,
                str(PROCS / "search_worker.py"),
                str(engine.home),
                "live",
                str(chunk),
                str(total),
                "120",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)
    writer = subprocess.run(
        [
            sys.executable,
            str(PROCS / "add_worker.py"),
            str(engine.home),
            "live",
            str(total),
            str(chunk),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert writer.returncode == 0, writer.stderr
    for proc in readers:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["problems"] == []
        assert result["last"] == total, "a reader never saw the writer's last commit"
        assert result["counts"] >= 3, "a reader did not observe the collection growing"


def test_second_writer_waits_then_fails_with_collection_locked(engine):
    from engine import Engine

    engine.create("locked", encoder="fake-hash", options={"dim": 8})
    holder = Engine(engine.home, registry=engine.registry).open("locked")
    holder.writer._lock.acquire()
    try:
        other = Engine(engine.home, registry=engine.registry, lock_timeout=1.0).open("locked")
        started = time.monotonic()
        with pytest.raises(CollectionLocked, match="being written by another process"):
            other.add(texts=["x"], ids=["x"])
        assert time.monotonic() - started >= 0.9
        assert other.count() == 0
    finally:
        holder.writer._lock.release()
    other.add(texts=["x"], ids=["x"])
    assert other.count() == 1


def test_a_writer_never_takes_a_repeated_manifest_stamp_for_the_committed_state(
    engine, monkeypatch
):
    """ext4 gives a new manifest the inode of the one before last; with coarse timestamps the
    change detector's (inode, mtime, size) can repeat. A writer that believed it must not roll
    back another handle's commit as if it were a killed writer's leftovers."""
    from engine import Engine, live

    col = engine.create("twice", encoder="precomputed", index="flat", options={"dim": 4})
    monkeypatch.setattr(live, "manifest_stamp", lambda folder: ("same", 0, 0))
    other = Engine(engine.home).open("twice")  # another process, in effect
    assert other.count() == 0  # it has read the manifest of the empty collection
    eye = np.eye(4, dtype=np.float32)
    col.add(vectors=eye[:1], ids=["first"])  # committed; `other` sees no new stamp
    other.add(vectors=eye[1:2], ids=["second"])
    reader = Engine(engine.home).open("twice")
    assert reader.count() == 2
    col.add(vectors=eye[2:3], ids=["third"])
    # A reader that took the repeated stamp for "no commit" serves the old generation only
    # until its periodic re-read of the manifest.
    monkeypatch.setattr(live, "RECHECK_S", 0.2)
    time.sleep(0.25)
    assert [d.id for d in reader.get(["third"]) if d] == ["third"]
    monkeypatch.undo()
    fresh = Engine(engine.home).open("twice")
    assert sorted(d.id for d in fresh.get(["first", "second"]) if d) == ["first", "second"]
    assert fresh.count() == 3 and fresh.manifest.generation == 3
