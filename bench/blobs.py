"""What keeping stored images in step with their documents costs a commit (engine/blobs.py).

    python bench/blobs.py [--n 100000]

Two figures, each as a share of the call it is part of, measured in the same run:
- a delete of one document of a collection of N image rows naming blob files (precomputed
  64-d vectors, flat): the removal's reference check (one scan of the image rows) against the
  whole delete, which already rewrites the index snapshot;
- a replacing add of N rows of a collection without a blob folder (texts' case): the commit's
  look at the retired rows, which should read nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from engine import Engine  # noqa: E402 (bench/engine.py must not shadow the package)

DIM = 64


def timed(obj: Any, name: str) -> list[float]:
    """Wrap ``obj.name`` to record each call's seconds in the returned list."""
    spent: list[float] = []
    orig = getattr(obj, name)

    def wrapper(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return orig(*args)
        finally:
            spent.append(time.perf_counter() - start)

    setattr(obj, name, wrapper)
    return spent


def delete_one(home: Path, n: int) -> tuple[float, float]:
    col = Engine(home).create("images", encoder="precomputed", index="flat", options={"dim": DIM})
    blobs = col.folder / "blobs"
    blobs.mkdir()
    paths = [str(blobs / f"{hashlib.sha256(str(i).encode()).hexdigest()}.png") for i in range(n)]
    for p in paths:
        Path(p).write_bytes(b"x")
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    fingerprint = col.manifest.encoder["fingerprint"]
    ids = [f"d{i}" for i in range(n)]
    col.add_encoded(paths, vectors, ids, None, fingerprint, modality="image")
    spent = timed(col.blobs, "_remove")
    start = time.perf_counter()
    col.delete(["d1"])
    total = time.perf_counter() - start
    assert not os.path.exists(paths[1]) and os.path.exists(paths[2])
    return total, sum(spent)


def replace_all(home: Path, n: int) -> tuple[float, float]:
    col = Engine(home).create("texts", encoder="precomputed", index="flat", options={"dim": DIM})
    rng = np.random.default_rng(1)
    ids = [f"d{i}" for i in range(n)]
    col.add(vectors=rng.standard_normal((n, DIM)).astype(np.float32), ids=ids)
    spent = timed(col.blobs, "named_by")
    start = time.perf_counter()
    col.add(vectors=rng.standard_normal((n, DIM)).astype(np.float32), ids=ids)
    return time.perf_counter() - start, sum(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    n = parser.parse_args().n
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="hubsearch-bench-blobs-") as tmp:
        total, part = delete_one(Path(tmp) / "a", n)
        print(f"delete of 1 of {n:,} images: {total * 1e3:.0f} ms, "
              f"removal check {part * 1e3:.1f} ms ({part / total:.1%})")  # fmt: skip
        total, part = replace_all(Path(tmp) / "b", n)
        print(f"replacing add of {n:,} rows, no blob folder: {total * 1e3:.0f} ms, "
              f"look at retired rows {part * 1e3:.2f} ms ({part / total:.2%})")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
