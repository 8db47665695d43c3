"""A readers-writer lock for a process's in-memory index.

FAISS and numpy release the GIL, so searches from many request threads run truly in parallel;
FAISS indexes are safe for concurrent searches but not for a search during an add, a removal or
a storage resize. Searches therefore share the lock and every change to the in-memory index
(a delta replay, the writer's own commit, a reload) takes it alone. Writers are preferred, so a
steady stream of searches cannot starve a commit; a thread may re-enter the side it holds, and the
thread holding the exclusive side may also read (the writer searches and reloads under it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}  # thread id -> how often it entered read()
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1  # the writing thread reads what it is writing
                as_writer = True
            else:
                as_writer = False
                if me not in self._readers:  # a re-entering reader must not wait for a writer
                    while self._writer is not None or self._writers_waiting:
                        self._cond.wait()
                self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                if as_writer:
                    self._writer_depth -= 1
                else:
                    depth = self._readers[me] - 1
                    if depth:
                        self._readers[me] = depth
                    else:
                        del self._readers[me]
                        if not self._readers:
                            self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                if me in self._readers:
                    # Waiting would deadlock: the writer waits for this very reader to leave.
                    raise RuntimeError("a thread holding the read lock asked for the write lock")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._writer_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._cond.notify_all()
