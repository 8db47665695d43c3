"""In-process add vs. encoding on a local Ray cluster (1 and 2 actors), on real sentences.

    python bench/ray_ingest.py [--n 100000] [--encoder use-multilingual] [--actors 1 2]

Texts: the BANKING77 questions (../shared/data/banking77, ~13,000) followed by distinct
sentences of the text under /usr/share/doc (Debian's package READMEs, NEWS and changelogs),
short ones (20-200 characters), in a fixed order. They are written to one Parquet file with ids,
which both paths read: in process as `hubsearch add kb.parquet` does (checking pass, then adds of
20,000), on Ray as `hubsearch add kb.parquet --ray` does.

Not counted: the model load in process (a warm-up encode), the cluster start-up and each run's
actor start-up (actor creation, model load, first batch: `first_batch`), printed apart. Counted
for Ray: the checking pass + everything after the first encoded batch came back. The distributed
overhead is that time over the in-process time, minus one (goal: < 30 % at one actor).

Also measured, since wall time on a shared 2-core machine follows the other processes' load:
the CPU seconds each path spends in the same counted windows (this process and every process
it started: Ray's workers, actors and daemons, sampled from /proc twice a second), whose ratio
is the distributed path's extra work whatever the load.

Also measured: the driver's commit throughput with precomputed vectors (`add_encoded` of
20,000-row chunks at the encoder's width), the rate past which one writer is the limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
sys.path.append(str(REPO / "bench"))  # last: bench/engine.py must not shadow the package

BANKING = REPO.parent / "shared" / "data" / "banking77"


def corpus(n: int) -> list[str]:
    import csv

    from text_sources import doc_sentences

    texts: list[str] = []
    for split in ("train.csv", "test.csv"):
        with (BANKING / split).open() as f:
            texts.extend(r["text"].strip() for r in csv.DictReader(f))
    seen = set(texts)
    texts = list(dict.fromkeys(texts))
    if len(texts) < n:
        texts.extend(s for s in doc_sentences() if s not in seen)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} sentences found, fewer than --n {n}")
    return texts[:n]


def write_parquet(texts: list[str], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"s{i}" for i in range(len(texts))], "text": texts})
    pq.write_table(table, path, row_group_size=10_000)
    return path


class CpuMeter:
    """CPU seconds used by this process and all its descendants, as a sampled timeline.

    Ray's workers are children of the raylet this process started; an actor that exits takes
    its counters with it, so the tree is sampled every ``every`` seconds and each process's
    last reading kept (at most ``every`` seconds of an exiting process are lost). Each
    process's CPU is also summed by what it is (``GROUPS``: this driver, the encoder actors,
    Ray's daemons...), to show where the distributed path's extra work goes.
    """

    GROUPS = ("driver", "encoder actors", "ledger", "readers, idle workers", "Ray daemons")

    def __init__(self, every: float = 0.5) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.root = os.getpid()
        self.last: dict[int, float] = {}
        self.sums = dict.fromkeys(self.GROUPS, 0.0)
        self.timeline: list[tuple[float, dict[str, float]]] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.last = {pid: cpu for pid, (cpu, _) in self._tree().items()}  # the baseline
        self.sample()
        self._thread.start()

    def _tree(self) -> dict[int, tuple[float, str]]:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        mine: dict[int, tuple[float, str]] = {}
        for pid in cpu:
            p, hops = pid, 0
            while p > 1 and p != self.root and hops < 50:
                p, hops = parents.get(p, 0), hops + 1
            if p == self.root:
                mine[pid] = (cpu[pid], self._group(pid))
        return mine

    def _group(self, pid: int) -> str:
        if pid == self.root:
            return "driver"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read(200).decode(errors="replace")
        except OSError:
            cmd = ""
        if "EncoderActor" in cmd:
            return "encoder actors"
        if "Ledger" in cmd:
            return "ledger"
        if "read_parts" in cmd or "ray::IDLE" in cmd:
            return "readers, idle workers"
        return "Ray daemons"

    def sample(self) -> None:
        for pid, (cpu, group) in self._tree().items():
            self.sums[group] += cpu - self.last.get(pid, 0.0)
            self.last[pid] = cpu
        self.timeline.append((time.perf_counter(), dict(self.sums)))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def at(self, t: float, group: str | None = None) -> float:
        """Cumulative CPU seconds at time ``t`` (linear between samples), of one group or all."""
        times = [x for x, _ in self.timeline]
        values = [sum(v.values()) if group is None else v[group] for _, v in self.timeline]
        return float(np.interp(t, times, values))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def own_cpu() -> float:
    """CPU seconds of this process, all threads (not the idle cluster's daemons)."""
    times = os.times()
    return times.user + times.system


def in_process(engine, encoder: str, options: dict, path: Path) -> dict:
    from engine.ingest import Fields, iter_rows
    from engine.streamed import add_streamed

    col = engine.create("inproc", encoder=encoder, index="flat", options=options)
    col.encoder.encode(["warm up the model"], "text")  # model load: not counted
    started, cpu = time.perf_counter(), own_cpu()
    report = add_streamed(col, lambda: iter_rows(path, Fields(id="id")))
    ended = time.perf_counter()
    return {
        "counted": ended - started,
        "cpu": own_cpu() - cpu,
        "added": report.added,
        "load": os.getloadavg()[0],
    }


def on_ray(engine, encoder: str, options: dict, path: Path, actors: int, meter: CpuMeter) -> dict:
    col = engine.create(f"ray{actors}", encoder=encoder, index="flat", options=options)
    timings: dict[str, float] = {}
    meter.sample()
    started = time.perf_counter()
    report = col.add_dataset(path, id="id", actors=actors, timings=timings)
    ended = time.perf_counter()
    meter.sample()
    wall = ended - started
    counted = timings["check"] + timings["encode"] - timings["first_batch"]
    encode_start = ended - timings["encode"]
    first = encode_start + timings["first_batch"]
    windows = [(encode_start - timings["check"], encode_start), (first, ended)]

    def counted_cpu(group: str | None = None) -> float:
        return sum(meter.at(b, group) - meter.at(a, group) for a, b in windows)

    cpu = counted_cpu()
    groups = {g: counted_cpu(g) for g in CpuMeter.GROUPS}
    return {
        **timings,
        "wall": wall,
        "counted": counted,
        "cpu": cpu,
        "groups": groups,
        "added": report.added,
        "load": os.getloadavg()[0],
    }


def commit_rate(engine, dim: int, n: int) -> float:
    """Docs/s the driver commits with vectors already made (what one writer can absorb)."""
    from engine.collection import COMMIT_EVERY

    col = engine.create("writer", encoder="precomputed", index="flat", options={"dim": dim})
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, n, COMMIT_EVERY):
        size = min(COMMIT_EVERY, n - start)
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"w{start + i}" for i in range(size)]
        texts = [f"document {start + i} of the writer benchmark" for i in range(size)]
        col.add_encoded(texts, vectors, ids, None, col.encoder.fingerprint)
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--encoder", default="use-multilingual")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    options: dict = {}
    if args.encoder.startswith("fake"):
        from fakeplugin.install import install

        site = install(Path(tempfile.mkdtemp(prefix="fake-site-")))
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
        options = {"dim": 512}
    import ray

    from engine import Engine

    texts = corpus(args.n)
    work = Path(tempfile.mkdtemp(prefix="ray-ingest-"))
    path = write_parquet(texts, work / "sentences.parquet")
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts):,} texts ({words:.1f} words on average), encoder {args.encoder}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")

    engine = Engine(work / "home")
    # Cluster first, so that the in-process add runs right before the Ray adds (similar load).
    # Ray starts its workers at nice 15 so that its daemons stay responsive; on a machine
    # shared with other work that starves the actors against this process (nice 0): the
    # comparison would measure the scheduler, not the distributed path.
    os.environ.setdefault("RAY_worker_niceness", "0")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cluster = time.perf_counter() - started
    inproc = in_process(engine, args.encoder, options, path)
    assert inproc["added"] == len(texts)
    dim = engine.open("inproc").dim
    meter = CpuMeter()  # after the in-process add: its sampling thread is not counted there
    runs = {a: on_ray(engine, args.encoder, options, path, a, meter) for a in args.actors}
    ray.shutdown()
    meter.stop()
    writer = commit_rate(engine, dim, min(args.n, 100_000))

    print(f"cluster start-up (not counted): {cluster:.1f} s")
    print()
    print(
        "| path | counted s | docs/s | vs in-process | CPU s | CPU vs in-process "
        "| check pass s | actor start-up s | load at end |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    n = len(texts)
    base, base_cpu = inproc["counted"], inproc["cpu"]
    print(
        f"| in process | {base:.1f} | {n / base:,.0f} | 1.00x | {base_cpu:.1f} | 1.00x "
        f"| (in counted) | - | {inproc['load']:.1f} |"
    )
    for a, r in runs.items():
        assert r["added"] == n, r
        over, cpu_over = r["counted"] / base - 1, r["cpu"] / base_cpu - 1
        print(
            f"| Ray, {a} actor{'s' if a > 1 else ''} | {r['counted']:.1f} | "
            f"{n / r['counted']:,.0f} | {1 + over:.2f}x ({over:+.0%}) | {r['cpu']:.1f} | "
            f"{1 + cpu_over:.2f}x ({cpu_over:+.0%}) | {r['check']:.1f} | "
            f"{r['first_batch']:.1f} | {r['load']:.1f} |"
        )
    print()
    print("CPU s in the counted windows, by process (in process: all in the driver)")
    print(f"| path | {' | '.join(CpuMeter.GROUPS)} |")
    print(f"|---|{'---|' * len(CpuMeter.GROUPS)}")
    print(f"| in process | {base_cpu:.1f} |{' - |' * (len(CpuMeter.GROUPS) - 1)}")
    for a, r in runs.items():
        cells = " | ".join(f"{r['groups'][g]:.1f}" for g in CpuMeter.GROUPS)
        print(f"| Ray, {a} actor{'s' if a > 1 else ''} | {cells} |")
    print()
    print(f"driver commit throughput, precomputed {dim}-d vectors: {writer:,.0f} docs/s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
