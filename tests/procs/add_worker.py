"""Child process for the crash and concurrency tests: adds N fake documents in acked chunks.

Usage: add_worker.py HOME NAME TOTAL CHUNK [--slow-save]
Prints "ACK <end>" after each add call returns (its documents are committed), and "SAVING"
just before an index snapshot is written; with --slow-save the snapshot is written in small
pieces with pauses, so a parent can kill the process in the middle of it.
"""

from __future__ import annotations

import sys
import time


def doc(i: int) -> str:
    return f"document number {i} about topic {i % 97} and {i % 13}"


def main() -> None:
    home, name, total, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    slow_save = "--slow-save" in sys.argv
    from engine import Engine

    if slow_save:
        import faiss

        from indexes.flat import FlatIndex

        def save(self, path):
            data = faiss.serialize_index(self._index).tobytes()
            print("SAVING", flush=True)
            with open(path, "wb") as f:
                for start in range(0, len(data), 1 << 16):
                    f.write(data[start : start + (1 << 16)])
                    f.flush()
                    time.sleep(0.002)

        FlatIndex.save = save

    eng = Engine(home, lock_timeout=60)
    col = eng.open(name)
    for start in range(0, total, chunk):
        end = min(start + chunk, total)
        col.add(
            texts=[doc(i) for i in range(start, end)],
            ids=[f"d{i}" for i in range(start, end)],
            metadata=[{"group": i % 7} for i in range(start, end)],
        )
        print(f"ACK {end}", flush=True)


if __name__ == "__main__":
    main()
