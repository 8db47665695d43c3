"""Load-test writer: commits small batches for SECONDS, publishing each acknowledged sequence.

Usage: load_writer.py HOME NAME SECONDS ACKFILE
After each add returns, writes "<seq> <monotonic time>" to ACKFILE (atomically), so readers can
tell which documents must already be visible to them.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    home, name, seconds, ackfile = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    from engine import Engine

    col = Engine(home, lock_timeout=60).open(name)
    seq, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        seq += 1
        col.add(
            texts=[f"load document {seq} batch {j} words w{seq % 97} w{j}" for j in range(20)],
            ids=[f"s{seq}-{j}" for j in range(20)],
            metadata=[{"seq": seq}] * 20,
        )
        tmp = f"{ackfile}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{seq} {time.monotonic()}")
        os.replace(tmp, ackfile)
        if seq % 25 == 0:
            col.delete([f"s{seq - 20}-{j}" for j in range(10)])
    print(seq, flush=True)


if __name__ == "__main__":
    main()
