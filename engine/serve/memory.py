"""Keep a long-running server's memory from creeping: at most two glibc malloc arenas.

glibc gives threads their own malloc arenas (up to 8 per core) and keeps what they free for
reuse by the same arena. A server's threads (the event loop, the search threads, the thread
pool that runs adds) each allocate request bodies, numpy arrays, SQLite pages and FAISS
buffers, so each arena settles at its own high-water mark: under 5 minutes of 32 searching
clients and one adding batches of 100 at 100,000 x 512 (bench/serve.py --mixed), the
server's resident memory grew 80 % after the warm-up (614 to 1,102 MB) while the documents
added needed 84 MB (in a 2-minute run, 32 arena-sized regions held 550 MB). With two arenas
it grew 7.3 % in 2 minutes (492 to 527 MB, 29 MB of it documents; 29.9 % without), and over
5 minutes 37 MB beyond the 177 MB of documents added, at the same queries/s and adds/s
within the machine's noise (docs/benchmarks.md, "Mixed load"). Worker processes get the setting
through the environment they inherit (glibc reads MALLOC_ARENA_MAX when a process starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas and its future children's; True where it applied.

    A value already in the environment (an operator's own MALLOC_ARENA_MAX) is left alone.
    Elsewhere than glibc (macOS, musl) this does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    return bool(mallopt(_M_ARENA_MAX, arenas))
