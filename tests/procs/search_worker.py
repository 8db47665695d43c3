"""Child process for the concurrency test: searches a collection in a loop while it grows.

Usage: search_worker.py HOME NAME CHUNK TOTAL SECONDS
Prints one JSON line: searches done, counts seen, and any inconsistency it met.
"""

from __future__ import annotations

import json
import random
import sys
import time


def main() -> None:
    home, name = sys.argv[1], sys.argv[2]
    chunk, total, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    from engine import Engine

    col = Engine(home).open(name)
    rng = random.Random()
    problems: list[str] = []
    searches, last, counts = 0, 0, set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            count = col.count()
            counts.add(count)
            if count < last:
                problems.append(f"count went back from {last} to {count}")
            if count % chunk:
                problems.append(f"half-written state: count {count}")
            last = count
            if count:
                i = rng.randrange(count)
                hits = col.search(f"document number {i} about topic {i % 97} and {i % 13}", k=3)
                if not hits or len({h.id for h in hits}) != len(hits):
                    problems.append(f"bad hits for d{i}: {[h.id for h in hits]}")
                doc = col.get([f"d{i}"])[0]
                if doc is None:
                    problems.append(f"d{i} missing at count {count}")
            searches += 1
            if count == total:
                break
        except Exception as exc:  # any error at all is a failure of the test
            problems.append(f"{type(exc).__name__}: {exc}")
    print(
        json.dumps(
            {"searches": searches, "last": last, "counts": len(counts), "problems": problems[:10]}
        )
    )


if __name__ == "__main__":
    main()
