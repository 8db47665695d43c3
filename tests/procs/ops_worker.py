"""Child process for the torture suite: one kind of write, acknowledged step by step.

Usage: ops_worker.py HOME NAME OP TRIAL N
  write    texts "doc <i> version <TRIAL>" for every id d0..d<N-1>, in acked chunks
  delete   a seeded third of the ids, in acked chunks
  reindex  switch the index to hnsw or flat (by TRIAL parity)
  compact  rewrite the vectors without deleted rows
  keyword  rebuild the keyword index from the stored texts
Prints "ACK <chunk>" after each call returns, and "DONE" at the end.
"""

from __future__ import annotations

import random
import sys

CHUNK = 500


def text(i: int, trial: int) -> str:
    """Distinct texts (random words), so approximate indexes can find each one by itself."""
    words = random.Random(i * 7919 + trial).choices(range(5000), k=8)
    return f"doc {i} version {trial} " + " ".join(f"w{w}" for w in words)


def deleted_ids(trial: int, n: int) -> list[str]:
    return sorted(f"d{i}" for i in random.Random(trial).sample(range(n), n // 3))


def main() -> None:
    home, name, op, trial, n = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    from engine import Engine

    col = Engine(home, lock_timeout=60).open(name)
    if op == "write":
        for c, start in enumerate(range(0, n, CHUNK)):
            ids = range(start, min(start + CHUNK, n))
            col.add(
                texts=[text(i, trial) for i in ids],
                ids=[f"d{i}" for i in ids],
                metadata=[{"v": trial} for _ in ids],
            )
            print(f"ACK {c}", flush=True)
    elif op == "delete":
        doomed = deleted_ids(trial, n)
        for c, start in enumerate(range(0, len(doomed), CHUNK // 2)):
            col.delete(doomed[start : start + CHUNK // 2])
            print(f"ACK {c}", flush=True)
    elif op == "reindex":
        col.reindex("hnsw" if trial % 2 else "flat")
        print("ACK 0", flush=True)
    elif op == "compact":
        col.compact()
        print("ACK 0", flush=True)
    elif op == "keyword":
        col.build_keywords()
        print("ACK 0", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
