"""Prometheus text format, written here (no client library): request counts and latency
histograms by route and status, documents and index kind per collection.

With several workers each process counts its own requests and writes a snapshot of its
counters to a folder the workers share (every ``flush_s`` when they changed, and on a scrape
it answers); a scrape sums every worker's latest snapshot, so ``/metrics`` covers all
workers whichever one answers (Prometheus' multiprocess mode, done with JSON files). A worker
that died keeps its last snapshot, so counters never go backwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: {"requests": {"route|method|status": n}, "latency": {"route|method": [bucket counts...,
#: sum]}, "encoder": [calls, texts]}: what a worker writes, and what the merge sums.
Snapshot = dict[str, Any]


class Metrics:
    def __init__(self, shared_dir: str | None = None, flush_s: float = 0.5) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._latency: dict[str, list[float]] = {}
        self.encoder = [0, 0]
        self.shared = Path(shared_dir) if shared_dir else None
        self.flush_s = flush_s
        self._dirty = False

    async def keep_flushing(self) -> None:
        """Every ``flush_s``, write this worker's counters if they changed (several workers)."""
        while self.shared is not None:
            await asyncio.sleep(self.flush_s)
            if self._dirty:
                await asyncio.to_thread(self.flush)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = f"{route}|{method}|{status}"
            self._requests[key] = self._requests.get(key, 0) + 1
            row = self._latency.setdefault(f"{route}|{method}", [0] * (len(BUCKETS) + 1) + [0.0])
            row[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            row[-1] += seconds
            self._dirty = True

    def snapshot(self) -> Snapshot:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "latency": {k: list(v) for k, v in self._latency.items()},
                "encoder": list(self.encoder),
            }

    def flush(self) -> None:
        """Write this worker's snapshot for the others' scrapes (temp file, rename)."""
        if self.shared is None:
            return
        self._dirty = False
        fd, tmp = tempfile.mkstemp(dir=self.shared, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.snapshot(), f)
        os.replace(tmp, self.shared / f"{os.getpid()}.json")

    def combined(self) -> Snapshot:
        if self.shared is None:
            return self.snapshot()
        self.flush()
        total: Snapshot = {"requests": {}, "latency": {}, "encoder": [0, 0]}
        for path in self.shared.glob("*.json"):
            try:
                part = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced while read: its next snapshot counts next time
            for k, n in part["requests"].items():
                total["requests"][k] = total["requests"].get(k, 0) + n
            for k, row in part["latency"].items():
                old = total["latency"].get(k)
                total["latency"][k] = row if old is None else _add(old, row)
            total["encoder"] = _add(total["encoder"], part["encoder"])
        return total

    def render(self, collections: Iterable[tuple[str, int, str]]) -> str:
        """The exposition text; ``collections`` gives (name, documents, index kind)."""
        snap = self.combined()
        out = _family("query_encoder_calls_total", "counter", "Encoder calls for text queries.")
        out.append(f"hubsearch_query_encoder_calls_total {snap['encoder'][0]}")
        out += _family("queries_encoded_total", "counter", "Text queries encoded.")
        out.append(f"hubsearch_queries_encoded_total {snap['encoder'][1]}")
        out += _family("requests_total", "counter", "Requests by route, method and status.")
        for key, n in sorted(snap["requests"].items()):
            route, method, status = key.rsplit("|", 2)
            labels = _labels(route=route, method=method, status=status)
            out.append(f"hubsearch_requests_total{labels} {n}")
        name = "request_duration_seconds"
        out += _family(name, "histogram", "Time to answer a request, by route.")
        for key, row in sorted(snap["latency"].items()):
            route, method = key.rsplit("|", 1)
            running = 0
            for bound, n in zip((*BUCKETS, "+Inf"), row[:-1], strict=True):
                running += int(n)
                le = bound if isinstance(bound, str) else repr(bound)
                labels = _labels(route=route, method=method, le=le)
                out.append(f"hubsearch_{name}_bucket{labels} {running}")
            labels = _labels(route=route, method=method)
            out.append(f"hubsearch_{name}_sum{labels} {row[-1]:.6f}")
            out.append(f"hubsearch_{name}_count{labels} {running}")
        rows = list(collections)
        out += _family("documents", "gauge", "Documents in each collection (committed).")
        out += [f"hubsearch_documents{_labels(collection=n)} {c}" for n, c, _ in rows]
        out += _family("index_info", "gauge", "The index kind of each collection.")
        out += [f"hubsearch_index_info{_labels(collection=n, kind=k)} 1" for n, _, k in rows]
        return "\n".join(out) + "\n"


def _add(a: list[Any], b: list[Any]) -> list[Any]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP hubsearch_{name} {help_text}", f"# TYPE hubsearch_{name} {kind}"]


def _labels(**labels: object) -> str:
    def esc(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"
