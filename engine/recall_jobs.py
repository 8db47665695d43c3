"""When recall is measured, by whom, and how its result is committed.

One :class:`RecallKeeper` per collection handle. After each write it checks
:func:`engine.recall.due` (an index built or rebuilt, the target changed, the collection grown
by ``growth`` since the last measurement) and, if due, measures in a daemon thread.

* **One at a time.** A thread lock orders this process's threads, a file lock
  (``recall.lock``) orders processes; a background run that finds either taken leaves the work
  to whoever holds it, and :meth:`RecallKeeper.wait` blocks on both and then checks again.
* **Never under the write lock.** Measuring takes only short shared locks (see
  engine/recall.py); the result is committed afterwards as its own small generation through
  the normal writer, which re-reads the manifest under the write lock and discards the result
  if the index it measured was replaced meanwhile (then measures the new one).
* **Other processes** pick the chosen knobs up on their next refresh (engine/live.py calls
  :func:`engine.recall.apply` whenever it loads, replays or adopts an index).

A process that exits mid-measurement loses only the measurement (nothing was written); the
next write or :meth:`RecallKeeper.wait` measures again. The CLI waits before it exits. A script
that exits while a background measurement runs must not wait minutes for it, nor leave it inside
FAISS while the interpreter tears down (the C++ runtime aborts the process: exit status -6, seen
in the crash torture test): an exit hook asks the thread to stop at its next step and joins it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from filelock import FileLock, Timeout

from engine import recall
from engine.commit import Change, Writer
from engine.errors import CollectionLocked
from engine.live import LiveView
from engine.search import threads_for

log = logging.getLogger(__name__)
#: Measurements of a replaced index are thrown away and redone at most this many times a run.
ATTEMPTS = 3
#: How long an exiting process waits for a background measurement to reach its next step.
EXIT_WAIT_S = 30.0


class Stopped(Exception):
    """The handle is closing or the process exiting: the measurement is dropped unwritten."""


class RecallKeeper:
    def __init__(self, view: LiveView, writer: Writer) -> None:
        self.view, self.writer = view, writer
        #: Measure in a background thread after writes; tests and benchmarks may turn it off
        #: and call :meth:`wait` instead.
        self.background = True
        self.last_error: BaseException | None = None
        self._running = threading.Lock()
        self._file_lock = FileLock(str(view.folder / "recall.lock"))
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        atexit.register(_stop_at_exit, weakref.ref(self))

    def poke(self) -> None:
        """Start a background measurement if one is due and none is running here."""
        if not self.background or recall.due(self.view.refresh()) is None:
            return
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._background, name=f"recall-{self.view.folder.name}", daemon=True
            )
            self._thread.start()

    def _background(self) -> None:
        try:
            self.run(block=False)
        except Stopped:
            pass
        except Exception as exc:  # a background failure must not kill the process
            self.last_error = exc
            log.warning("recall measurement of %s failed: %s", self.view.folder.name, exc)

    def wait(self, progress: recall.Progress | None = None) -> dict[str, Any] | None:
        """Finish any due measurement (running here, in another process, or not started);
        the collection's last measurement afterwards (None if it has none, e.g. when exact).
        """
        self.run(block=True, progress=progress)
        m = self.view.refresh()
        return None if recall.exact(m) else (m.recall or {}).get("measured")

    def run(self, block: bool, progress: recall.Progress | None = None) -> dict[str, Any] | None:
        """Measure and commit if due; the committed record, or None when nothing was due."""
        if not self._running.acquire(blocking=block):
            return None
        try:
            try:
                self._file_lock.acquire(timeout=-1 if block else 0)
            except Timeout:
                return None  # another process measures; it commits, we refresh
            try:
                return self._measure_and_commit(progress)
            finally:
                self._file_lock.release()
        finally:
            self._running.release()

    def _measure_and_commit(self, progress: recall.Progress | None) -> dict[str, Any] | None:
        for _ in range(ATTEMPTS):
            m = self.view.refresh()
            if recall.due(m) is None:
                return None
            try:
                # One FAISS thread (the setting is per calling thread in OpenMP): batches of 32
                # queries ran 2.4x slower on two threads of a busy 2-core machine, and readers
                # keep the other core.
                with threads_for(1):
                    record = recall.measure(
                        self.view, recall.config(m.recall), self._unless_stopping(progress)
                    )
            except recall.Stale:
                continue
            if self._commit(record):
                return record
        return None

    def _commit(self, record: dict[str, Any]) -> bool:
        """Commit ``record`` unless the index it measured was replaced (then False)."""
        for _ in range(ATTEMPTS):
            try:
                with self.writer.writing() as m:
                    if m.index.get("built", 0) != record["built"]:
                        return False
                    settings = {k: v for k, v in (m.recall or {}).items() if k != "measured"}
                    if settings.get("target", recall.DEFAULT_TARGET) != record["target"]:
                        return False  # the target changed meanwhile: measure again
                    event = {
                        "event": "recall", "recall": record["recall"], "met": record["met"],
                        "params": record.get("params", {}), "kind": record["kind"],
                    }  # fmt: skip
                    self.writer.commit(
                        m, Change(recall={**settings, "measured": record}, event=event)
                    )
                    return True
            except CollectionLocked:
                continue  # a long add holds the lock: try again
        return False

    def _unless_stopping(self, progress: recall.Progress | None) -> recall.Progress:
        """``progress``, raising :class:`Stopped` once :meth:`stop` was called (the
        measurement reports progress after every step, each a fraction of a second)."""

        def step(done: int, total: int) -> None:
            if self._stopping.is_set():
                raise Stopped
            if progress:
                progress(done, total)

        return step

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a running background measurement at its next step (waits up to ``timeout``)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)


def _stop_at_exit(ref: weakref.ref[RecallKeeper]) -> None:
    keeper = ref()
    if keeper is not None:
        keeper.background = False
        keeper.stop(EXIT_WAIT_S)
