"""Many threads and a second process on one collection, as a support-desk backend uses it.

Usage:
  thread_stress.py run HOME NAME SECONDS   searching threads + a writing thread in this process
  thread_stress.py write HOME NAME SECONDS a writing process (batches of 200)

The seed documents ``s<i>`` (vector ``seed_vectors()[i]``) are never changed, so every search
for one of them knows its answer: the document itself first whenever the search is exact (a
filter matching few documents, or a `flat` collection). ``run`` prints one JSON line with what
it checked and every problem it met; a crash shows as a faulthandler traceback (run it with
``python -X faulthandler``).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

import numpy as np

DIM = 64
SEEDS = 4_000
SEARCHERS = 3
#: Batches each writer makes however slow the machine, so searches always overlap writes.
MIN_BATCHES = 3


def seed_vectors() -> np.ndarray:
    x = np.random.default_rng(7).normal(size=(SEEDS, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batch(tag: str, n: int, size: int) -> tuple[list[str], np.ndarray]:
    x = np.random.default_rng([ord(tag), n]).normal(size=(size, DIM))
    return [f"{tag}{n}-{j}" for j in range(size)], x.astype(np.float32)


def search_loop(col, kind: str, deadline: float, writing: threading.Event, out: dict, lock) -> None:
    seeds = seed_vectors()
    rng = random.Random()
    done, problems = 0, []
    while time.monotonic() < deadline or writing.is_set():
        i = rng.randrange(SEEDS)
        filtered = rng.random() < 0.5
        where = {"half": i % 2} if filtered else None
        try:
            hits = col.search(vector=seeds[i], k=10, where=where)
        except Exception as exc:  # any error is a failure of the engine
            problems.append(f"{type(exc).__name__}: {exc}")
            continue
        ids = [h.id for h in hits]
        if len(set(ids)) != len(ids):
            problems.append(f"duplicate ids for s{i}: {ids}")
        if len(ids) != 10:
            problems.append(f"{len(ids)} hits for s{i}")
        if (filtered or kind == "flat") and ids[:1] != [f"s{i}"]:
            how = "filtered" if filtered else "unfiltered"
            problems.append(f"s{i} not first for its own vector ({how}): {ids[:3]}")
        done += 1
    with lock:
        out["searches"] += done
        out["problems"].extend(problems[:5])


def write_loop(col, deadline: float, writing: threading.Event, out: dict, lock) -> None:
    """Adds, upserts and deletes its own documents; the seeds are never touched."""
    n, problems = 0, []
    while time.monotonic() < deadline or n < MIN_BATCHES:
        try:
            ids, x = batch("t", n, 100)
            col.add(vectors=x, ids=ids, metadata=[{"half": j % 2} for j in range(100)])
            if n % 3 == 2:  # replace half of an earlier batch, delete a few of another
                old_ids, old_x = batch("t", n - 1, 100)
                col.add(vectors=-old_x[:50], ids=old_ids[:50])
                col.delete(batch("t", n - 2, 100)[0][:10])
        except Exception as exc:
            problems.append(f"writer thread: {type(exc).__name__}: {exc}")
            break
        n += 1
    writing.clear()
    with lock:
        out["thread_batches"] = n
        out["problems"].extend(problems)


def run(home: str, name: str, seconds: float) -> None:
    from engine import Engine

    engine = Engine(home, lock_timeout=120)
    col = engine.open(name)
    kind = col.manifest.index["kind"]
    assert engine.open(name) is col  # one handle per engine, shared by the threads below
    out: dict = {"searches": 0, "problems": []}
    lock, writing = threading.Lock(), threading.Event()
    writing.set()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=search_loop, args=(col, kind, deadline, writing, out, lock))
        for _ in range(SEARCHERS)
    ]
    threads.append(threading.Thread(target=write_loop, args=(col, deadline, writing, out, lock)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out))


def write(home: str, name: str, seconds: float) -> None:
    from engine import Engine

    col = Engine(home, lock_timeout=120).open(name)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline or n < MIN_BATCHES:
        ids, x = batch("p", n, 200)
        col.add(vectors=x, ids=ids, metadata=[{"half": j % 2} for j in range(200)])
        n += 1
    print(json.dumps({"process_batches": n}))


if __name__ == "__main__":
    {"run": run, "write": write}[sys.argv[1]](sys.argv[2], sys.argv[3], float(sys.argv[4]))
