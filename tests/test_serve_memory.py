"""The server caps glibc's malloc arenas (engine/serve/memory.py), unless the operator set it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "import os; from engine.serve.memory import limit_malloc_arenas; "
    "applied = limit_malloc_arenas(); "
    "child = os.popen('echo $MALLOC_ARENA_MAX').read().strip(); "
    "print(applied, child)"
)


def probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_server_caps_malloc_arenas_for_itself_and_its_workers():
    assert probe() == "True 2"  # applied here, and inherited by worker processes


def test_an_operators_own_malloc_arena_max_is_left_alone():
    assert probe(MALLOC_ARENA_MAX="6") == "False 6"
