"""How many OpenMP threads FAISS may use for a piece of work.

FAISS parallelises inside each call. For small calls (an engine commit of a few hundred vectors,
a PQ codebook of 256 entries over 8 dimensions) the parallel regions cost more than they gain,
and on a machine whose other cores are busy they cost a lot: adding 3,000 vectors to an HNSW
graph took 1.4 s on two threads and 0.12 s on one while another process used the second core.
So small work runs on one thread and large work on all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Calls on fewer rows than this run on one thread.
SMALL = 20_000


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenMP threads in FAISS (None: leave as is)."""
    import faiss

    before = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def for_rows(rows: int) -> int | None:
    """One thread for a small call, FAISS's default for a large one."""
    return 1 if rows < SMALL else None
