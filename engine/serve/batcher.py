"""Micro-batching of concurrent text searches: one engine call for the queries that wait.

A model encodes 32 short texts for about a fifth of the CPU per text that it spends on one
(``use-multilingual``: 3.6 ms alone, 0.7 ms each in a batch of 32), and an index answers a
batch of queries in one call; the store fetches the hits of a batch in one query. So the whole
search is batched, not just the encode: each collection has one *lane*, and a batch of its
text queries with the same ``k``/``where``/``modality`` is one ``Collection.search_many`` call
(the embedded API's own batching, with its semantics: hybrid mode, a tuned encoder, ``where``)
on one of a few lane threads, where the collection is also opened: the event loop only parses,
queues and answers. (Lanes were by encoder before, so two collections of one model shared an
encoder call; per collection the search, not only the encode, is shared.)

Natural batching (Triton's and TF Serving's dynamic batching): a query that finds a batch slot
of its lane free waits at most the window for company; queries arriving while both slots are
busy (:data:`LANE_BATCHES`) queue and go together as the next batch (up to ``max_size``) the
moment one is free. Under light load a query pays the window; under heavy load batches grow
with the queue. One slot left a core idle (server CPU 117 % of 200, hybrid p99 104 ms on a
quiet machine); two gave 1.2x the queries/s and p99 97 ms (docs/benchmarks.md).

Measured at 32 clients (docs/benchmarks.md): the former design, encoder calls batched but
each search on its own pool thread, reached mean batch 1.7 on a quiet machine, since requests
spent most of their time outside the encoder and 40 pool threads fought over the GIL.

The lane thread runs FAISS single-threaded: a batch is small work, the event loop needs the
other core, and two OpenMP threads waiting on each other on a busy 2-core machine made a batch
of 8 cost 2.4 ms of CPU per query instead of 0.2 ms.

Each query is validated alone before it joins (``app._search``), so one bad query cannot fail
its neighbours; a batch that fails anyway (say, a lone surrogate) is run again query by query,
so each request gets its own answer or its own error.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.collection import Collection, Hit
from engine.encoders import TEXT
from engine.serve.middleware import log


@dataclass
class _Query:
    item: str | np.ndarray  # a text, or a query vector
    ranking: dict[str, Any]  # k, where, mode, ...: Collection.search's keyword arguments
    waiter: asyncio.Future[Any]

    @property
    def is_text(self) -> bool:
        return isinstance(self.item, str)

    def group(self) -> str:
        """Queries that can share one ``search_many`` call have the same group."""
        return json.dumps([self.is_text, self.ranking], sort_keys=True)


@dataclass
class _Lane:
    name: str
    waiting: list[_Query] = field(default_factory=list)
    running: int = 0  # batches of this lane being searched now
    timer: asyncio.TimerHandle | None = None


#: Batches of one lane searched at once. Two: one batch's store and keyword work (SQLite) and
#: another's encode (TensorFlow) release the GIL, so a second batch uses the second core.
LANE_BATCHES = 2
#: One query's answer from a lane: (the collection searched, its hits) or the error.
Answer = tuple[Collection, list[Hit]]


class SearchBatcher:
    """Lanes by collection name, run on a few threads (at most LANE_BATCHES per lane at once)."""

    def __init__(
        self,
        open_collection: Callable[[str], Collection],
        window_s: float,
        max_size: int,
        counts: list[int] | None = None,
    ) -> None:
        self.open = open_collection
        self.window_s = window_s
        self.max_size = max(1, max_size)
        self._lanes: dict[str, _Lane] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: [encoder calls made, texts they encoded], shown by /metrics.
        self.counts = counts if counts is not None else [0, 0]

    @property
    def enabled(self) -> bool:
        return self.window_s > 0 and self.max_size > 1

    async def search(self, name: str, item: str | np.ndarray, ranking: dict[str, Any]) -> Answer:
        """``search(text, ...)`` or ``search(vector=..., ...)`` on collection ``name``, in a
        batch with the queries that wait with it (vector queries too: one index call and one
        store fetch for the batch, and no pool hop of their own). The collection is opened in
        the lane's thread, not on the event loop."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(name)
        query = _Query(item, ranking, loop.create_future())
        lane.waiting.append(query)
        if lane.running < LANE_BATCHES:
            if len(lane.waiting) >= self.max_size:
                self._start(lane)
            elif lane.timer is None:
                lane.timer = loop.call_later(self.window_s, self._start, lane)
        return await query.waiter

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def _start(self, lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        # Requests that gave up (timeout, client gone) while queued are not run.
        lane.waiting = [q for q in lane.waiting if not q.waiter.done()]
        if lane.running >= LANE_BATCHES or not lane.waiting:
            if not lane.running and self._lanes.get(lane.name) is lane:
                del self._lanes[lane.name]  # idle and empty: names do not pile up
            return
        batch, lane.waiting = lane.waiting[: self.max_size], lane.waiting[self.max_size :]
        lane.running += 1
        task = asyncio.get_running_loop().create_task(self._run(lane, batch))
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, lane: _Lane, batch: list[_Query]) -> None:
        if self._threads is None:
            workers = min(4, os.cpu_count() or 1)
            self._threads = ThreadPoolExecutor(
                workers, thread_name_prefix="hubsearch-lane", initializer=_one_omp_thread
            )
        try:
            loop = asyncio.get_running_loop()
            work = self._search_batch
            answers, calls = await loop.run_in_executor(self._threads, work, lane.name, batch)
            self.counts[0] += calls
            self.counts[1] += sum(q.is_text for q in batch)
            for query, (answer, exc) in zip(batch, answers, strict=True):
                _settle(query.waiter, answer, exc)
        except BaseException as exc:  # the lane itself failed (shut down): fail its queries
            for query in batch:
                _settle(query.waiter, exc=exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            lane.running -= 1
            self._start(lane)  # those that queued behind this batch go now: no further window

    def _search_batch(
        self, name: str, batch: list[_Query]
    ) -> tuple[list[tuple[Answer | None, BaseException | None]], int]:
        """In a lane's thread: one ``search_many`` per group; each query's (answer, error) in
        ``batch``'s order, and the number of calls made (one encoder call each)."""
        try:
            col = self.open(name)
        except Exception as exc:
            return [(None, exc)] * len(batch), 0
        groups: dict[str, list[int]] = {}
        for i, query in enumerate(batch):
            groups.setdefault(query.group(), []).append(i)
        answers: list[tuple[Answer | None, BaseException | None]] = [(None, None)] * len(batch)
        encodes = TEXT in col.encoder.modalities  # else keyword-only: no encoder call to share
        calls = 0
        for rows in groups.values():
            texts = batch[rows[0]].is_text
            if texts and not encodes:
                answers_alone = [_search_one(col, batch[i]) for i in rows]
                for i, answer in zip(rows, answers_alone, strict=True):
                    answers[i] = answer
                continue
            ranking = batch[rows[0]].ranking
            try:
                if texts:
                    calls += 1
                    results = col.search_many([batch[i].item for i in rows], **ranking)
                else:
                    vectors = np.stack([batch[i].item for i in rows])
                    results = col.search_many(vectors=vectors, **ranking)
            except Exception as exc:
                if len(rows) > 1:
                    log({"event": "batch failed", "collection": name, "error": repr(exc)})
                calls += len(rows) if texts else 0
                for i in rows:  # each query alone: its own answer or its own error
                    answers[i] = _search_one(col, batch[i])
                continue
            for i, hits in zip(rows, results, strict=True):
                answers[i] = ((col, hits), None)
        return answers, calls


def _search_one(col: Collection, q: _Query) -> tuple[Answer | None, BaseException | None]:
    try:
        if q.is_text:
            return (col, col.search(q.item, **q.ranking)), None
        return (col, col.search(vector=q.item, **q.ranking)), None
    except Exception as exc:
        return None, exc


def _one_omp_thread() -> None:
    """FAISS single-threaded in this thread (OpenMP's thread count is per calling thread)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a core dependency
        return
    faiss.omp_set_num_threads(1)


def _settle(waiter: asyncio.Future[Any], value: Any = None, exc: BaseException | None = None):
    if waiter.done():  # its request was cancelled (client gone, timeout)
        return
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(value)
