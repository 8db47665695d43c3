"""Micro-batching of concurrent text queries: one encoder call for the queries of a window.

A model encodes 64 short texts in little more than the time of one (the per-call overhead
dominates), so when requests arrive together the server collects the texts that arrive within
a short window (or until the batch is full), encodes them in one call in a worker thread and
hands each request its row. Texts are validated one by one first, so one bad query cannot fail
the batch it would have joined.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from engine.encoders import TEXT, Encoder


@dataclass
class _Batch:
    encoder: Encoder
    texts: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    sent: bool = False


class TextBatcher:
    def __init__(self, window_s: float, max_size: int, counts: list[int] | None = None) -> None:
        self.window_s = window_s
        self.max_size = max(1, max_size)
        self._open: dict[int, _Batch] = {}  # by encoder identity: one model, one batch
        self._tasks: set[asyncio.Task[None]] = set()
        #: [encoder calls made, texts they encoded], shown by /metrics.
        self.counts = counts if counts is not None else [0, 0]

    async def encode(self, encoder: Encoder, text: str) -> np.ndarray:
        """``text``'s vector (a validated, non-empty string), encoded with its neighbours."""
        if self.window_s <= 0 or self.max_size == 1:
            self.counts[0] += 1
            self.counts[1] += 1
            return (await run_in_threadpool(encoder.encode, [text], TEXT))[0]
        loop = asyncio.get_running_loop()
        batch = self._open.get(id(encoder))
        if batch is None:
            batch = self._open[id(encoder)] = _Batch(encoder)
            loop.call_later(self.window_s, self._send, batch)
        waiter = loop.create_future()
        batch.texts.append(text)
        batch.waiters.append(waiter)
        if len(batch.texts) >= self.max_size:
            self._send(batch)
        return await waiter

    def _send(self, batch: _Batch) -> None:
        if batch.sent:
            return
        batch.sent = True
        if self._open.get(id(batch.encoder)) is batch:
            del self._open[id(batch.encoder)]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        self.counts[0] += 1
        self.counts[1] += len(batch.texts)
        try:
            vectors = await run_in_threadpool(batch.encoder.encode, batch.texts, TEXT)
        except Exception:
            # Each text was validated alone, so this is rare (e.g. out of memory for the batch):
            # encode one by one, so each request gets its own answer or its own error.
            for text, waiter in zip(batch.texts, batch.waiters, strict=True):
                try:
                    row = (await run_in_threadpool(batch.encoder.encode, [text], TEXT))[0]
                except Exception as exc:
                    _settle(waiter, exc=exc)
                else:
                    _settle(waiter, row)
            return
        for row, waiter in zip(vectors, batch.waiters, strict=True):
            _settle(waiter, row)


def _settle(waiter: asyncio.Future[Any], value: Any = None, exc: BaseException | None = None):
    if waiter.done():  # its request was cancelled (client gone, timeout)
        return
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(value)
