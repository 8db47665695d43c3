"""8 reader processes and 1 writer: no error, no stale read, memory flat.

Short form (CI): 60 s. Long form: HUBSEARCH_LOAD_SECONDS=600.
A read is stale if a document whose add had returned before the read began is not visible
(readers check the manifest on every call, so the reload interval is zero).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROCS = Path(__file__).parents[1] / "procs"
SECONDS = float(os.environ.get("HUBSEARCH_LOAD_SECONDS", "60"))


@pytest.mark.slow
def test_eight_readers_one_writer_no_errors_no_stale_reads_flat_memory(engine, tmp_path):
    col = engine.create("load", encoder="fake-hash", options={"dim": 128})
    col.add(
        texts=[f"seed document {i}" for i in range(2000)],
        ids=[f"seed{i}" for i in range(2000)],
        metadata=[{"seq": 0}] * 2000,
    )
    ack = tmp_path / "ack"
    env = dict(os.environ)
    args = [str(engine.home), "load", str(SECONDS), str(ack)]
    readers = [
        subprocess.Popen(
            [sys.executable, str(PROCS / "load_reader.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    writer = subprocess.run(
        [sys.executable, str(PROCS / "load_writer.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SECONDS + 120,
    )
    assert writer.returncode == 0, writer.stderr[-2000:]
    commits = int(writer.stdout.strip())
    assert commits > 10
    for proc in readers:
        out, err = proc.communicate(timeout=SECONDS + 120)
        assert proc.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["errors"] == []
        assert result["stale"] == 0, result["stale_reads"]
        assert result["searches"] > 50
        # Flat means no leak: what a reader may gain is its bounded caches (SQLite's page cache,
        # the filter cache) plus the data the writer added meanwhile (each new document's
        # vector in the index and in the mapped vector file, its store rows: under 2 KiB).
        allowed = 64 + commits * 20 * 2048 / 2**20
        assert result["rss_end"] - result["rss_warm"] < allowed, (result, allowed)
