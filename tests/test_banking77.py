"""Real retrieval quality through the CLI: BANKING77 with the bundled USE multilingual encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SHARED

DATA = SHARED / "data" / "banking77"


def hubsearch(home, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="../shared/data/banking77 is not present")
def test_top_hit_intent_accuracy_on_banking77(tmp_path):
    hubsearch(tmp_path, "create", "b77", "--encoder", "use-multilingual")
    summary = json.loads(hubsearch(tmp_path, "add", "b77", str(DATA / "train.csv"), "--json"))
    assert summary["added"] == 10_003
    out = hubsearch(
        tmp_path, "search", "b77", "--queries", str(DATA / "test.csv"), "-k", "1", "--json"
    )
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 3_080
    right = sum(
        r["hits"][0]["metadata"]["category"] == r["query_metadata"]["category"] for r in results
    )
    accuracy = right / len(results)
    print(f"BANKING77 kNN@1 accuracy: {accuracy:.4f}")
    assert accuracy >= 0.883
