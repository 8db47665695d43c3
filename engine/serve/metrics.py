"""Prometheus text format, written here (no client library): request counts and latency
histograms by route and status, kept per worker process."""

from __future__ import annotations

import threading
from collections.abc import Iterable

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}
        # (route, method) -> per-bucket counts (+Inf last), sum of seconds
        self._hist: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            empty = ([0] * (len(BUCKETS) + 1), [0.0])
            counts, total = self._hist.setdefault((route, method), empty)
            counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            total[0] += seconds

    def render(
        self, collections: Iterable[tuple[str, int, str]], encoded: tuple[int, int] = (0, 0)
    ) -> str:
        """The exposition text; ``collections`` gives (name, documents, index kind),
        ``encoded`` the micro-batcher's (encoder calls, text queries encoded)."""
        out = [
            "# HELP hubsearch_query_encoder_calls_total Encoder calls for text queries.",
            "# TYPE hubsearch_query_encoder_calls_total counter",
            f"hubsearch_query_encoder_calls_total {encoded[0]}",
            "# HELP hubsearch_queries_encoded_total Text queries encoded (calls x batch size).",
            "# TYPE hubsearch_queries_encoded_total counter",
            f"hubsearch_queries_encoded_total {encoded[1]}",
            "# HELP hubsearch_requests_total HTTP requests answered, by route, method and status.",
            "# TYPE hubsearch_requests_total counter",
        ]
        with self._lock:
            counts = dict(self._counts)
            hist = {k: (list(c), t[0]) for k, (c, t) in self._hist.items()}
        for (route, method, status), n in sorted(counts.items()):
            out.append(
                f"hubsearch_requests_total{_labels(route=route, method=method, status=status)} {n}"
            )
        out += [
            "# HELP hubsearch_request_duration_seconds Time to answer a request, by route.",
            "# TYPE hubsearch_request_duration_seconds histogram",
        ]
        for (route, method), (buckets, total) in sorted(hist.items()):
            running = 0
            for bound, n in zip((*BUCKETS, "+Inf"), buckets, strict=True):
                running += n
                le = bound if isinstance(bound, str) else repr(bound)
                out.append(
                    "hubsearch_request_duration_seconds_bucket"
                    f"{_labels(route=route, method=method, le=le)} {running}"
                )
            labels = _labels(route=route, method=method)
            out.append(f"hubsearch_request_duration_seconds_sum{labels} {total:.6f}")
            out.append(f"hubsearch_request_duration_seconds_count{labels} {running}")
        out += [
            "# HELP hubsearch_documents Documents in each collection (committed generation).",
            "# TYPE hubsearch_documents gauge",
        ]
        rows = list(collections)
        out += [f"hubsearch_documents{_labels(collection=n)} {c}" for n, c, _ in rows]
        out += [
            "# HELP hubsearch_index_info The index kind of each collection.",
            "# TYPE hubsearch_index_info gauge",
        ]
        out += [f"hubsearch_index_info{_labels(collection=n, kind=k)} 1" for n, _, k in rows]
        return "\n".join(out) + "\n"


def _labels(**labels: object) -> str:
    def esc(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"
