"""Load-test reader: searches in a loop and checks it never reads stale or broken state.

Usage: load_reader.py HOME NAME SECONDS ACKFILE
Prints one JSON line: searches, stale reads, errors, RSS at warm-up and at the end (MiB).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def read_ack(path: str) -> tuple[int, float]:
    try:
        seq, at = Path(path).read_text().split()
        return int(seq), float(at)
    except (OSError, ValueError):
        return 0, 0.0


def main() -> None:
    home, name, seconds, ackfile = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    from engine import Engine

    col = Engine(home).open(name)
    errors, stale, searches = [], 0, 0
    stale_reads: list[str] = []  # what each stale read saw, for the test's failure message
    rss_warm, started = None, time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        try:
            seq, _ = read_ack(ackfile)  # acknowledged before this call began
            if seq:
                doc = col.get([f"s{seq}-0"])[0]
                if doc is None:
                    stale += 1
                    gen = col.manifest.generation
                    stale_reads.append(f"get s{seq}-0: None at generation {gen}")
                hits = col.search(f"load document {seq} batch 3", k=5, where={"seq": seq})
                if not hits or any(h.metadata["seq"] != seq for h in hits):
                    stale += 1
                    seen = [(h.id, h.metadata.get("seq"), h.similarity, h.keyword_score)
                            for h in hits]  # fmt: skip
                    stale_reads.append(
                        f"search seq={seq}: {seen} at generation {col.manifest.generation}"
                    )
            col.search("load document words", k=10)
            searches += 1
        except Exception as exc:  # any error at all fails the test
            errors.append(f"{type(exc).__name__}: {exc}")
        if rss_warm is None and time.monotonic() - started > min(10.0, seconds / 4):
            rss_warm = rss_mib()
    print(
        json.dumps(
            {
                "searches": searches,
                "stale": stale,
                "stale_reads": stale_reads[:5],
                "errors": errors[:5],
                "rss_warm": rss_warm or rss_mib(),
                "rss_end": rss_mib(),
            }
        )
    )


if __name__ == "__main__":
    main()
