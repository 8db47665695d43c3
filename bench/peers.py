"""hubsearch side by side with Chroma and txtai: same corpus, same machine, one run.

    python bench/peers.py --sizes 10000 100000 [--skip-banking] [--quick] [--json FILE]

Run it from the peers venv (docs/peers.md: the peers come from bench/requirements-peers.txt and
are not part of the test install, since txtai pulls in torch). Every phase of every system runs
in a fresh process (bench/peers_phases.py); the corpus and its exact answers are built once per
size (bench/peers_corpus.py). Prints one markdown table per size with hubsearch / peer ratios,
the goals of issue 7 at the largest size, and the BANKING77 run with the real encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# This file lives in bench/: keep bench/ for the peers_* helpers and put the repo first for engine.
sys.path[:0] = [str(REPO)]

SYSTEMS = ("hubsearch-auto", "hubsearch-flat", "chroma", "txtai")
BANKING_SYSTEMS = ("hubsearch-auto", "chroma", "txtai")
PHASE_ORDER = ("ingest", "open", "query", "add", "delete", "verify")
RATIOS = (("hubsearch-auto", "chroma"), ("hubsearch-auto", "txtai"),
          ("hubsearch-flat", "chroma"), ("hubsearch-flat", "txtai"))
MARK = "@@PEERS@@"


def run_child(args: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its last marked stdout line is the result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    load = os.getloadavg()[0]
    with open(log, "a") as err:
        err.write(f"\n=== {' '.join(args)}\n")
        err.flush()
        try:
            done = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in done.stdout.splitlines() if x.startswith(MARK)]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}; see {log}"}
    return {**json.loads(lines[-1][len(MARK):]), "load_before": load}


def child(opts: argparse.Namespace) -> None:
    from peers_corpus import Corpus

    path = Path(opts.path)
    if opts.phase == "banking":
        from peers_banking import banking

        out = banking(opts.system, path, opts.banking_limit)
    else:
        from peers_phases import PHASES

        corpus = Corpus(Path(opts.corpus), opts.size, opts.queries)
        out = PHASES[opts.phase](opts.system, corpus, path)
    print(MARK + json.dumps(out, default=str), flush=True)


def measure_size(n: int, opts: argparse.Namespace, work: Path, log: Path) -> dict[str, Any]:
    from peers_corpus import build

    corpus = build(work / f"corpus-{n}", n, opts.queries)
    results: dict[str, Any] = {}
    for system in opts.systems:
        path = work / str(n) / system
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        results[system] = {}
        for phase in PHASE_ORDER:
            args = ["--phase", phase, "--system", system, "--size", str(n), "--path", str(path),
                    "--corpus", str(corpus.folder), "--queries", str(opts.queries)]
            out = run_child(args, log, opts.timeout)
            results[system][phase] = out
            print(f"  {n:>7} {system:<15} {phase:<7} "
                  f"{'ERROR ' + out['error'] if 'error' in out else 'ok'}", flush=True)
            if "error" in out and phase == "ingest":
                break
        shutil.rmtree(path, ignore_errors=True)
    return results


def _get(res: dict, system: str, *keys: str) -> Any:
    cur: Any = res.get(system, {})
    for k in keys:
        cur = cur.get(k) if isinstance(cur, dict) else None
    return cur


def peak_rss(res: dict, system: str) -> float | None:
    values = [p.get("rss_mb") for p in res.get(system, {}).values() if isinstance(p, dict)]
    values = [v for v in values if v is not None]
    return max(values) if values else None


ROWS: list[tuple[str, Any, str]] = [
    ("ingest docs/s (persisted)", ("ingest", "docs_per_s"), "{:,.0f}"),
    ("ingest peak RSS MB", ("ingest", "rss_mb"), "{:,.0f}"),
    ("  of it the harness's input arrays MB", ("ingest", "rss_inputs_mb"), "{:,.0f}"),
    ("disk MB after ingest", ("ingest", "disk_mb"), "{:,.1f}"),
    ("cold open: import+open s", ("open", "open_s"), "{:.2f}"),
    ("cold open: first answer s", ("open", "first_query_s"), "{:.2f}"),
    ("query p50 ms", ("query", "plain", "p50_ms"), "{:.2f}"),
    ("query p95 ms", ("query", "plain", "p95_ms"), "{:.2f}"),
    ("query p99 ms", ("query", "plain", "p99_ms"), "{:.2f}"),
    ("recall@10", ("query", "plain", "recall"), "{:.4f}"),
    ("filtered p50 ms", ("query", "filtered", "p50_ms"), "{:.2f}"),
    ("filtered p95 ms", ("query", "filtered", "p95_ms"), "{:.2f}"),
    ("filtered p99 ms", ("query", "filtered", "p99_ms"), "{:.2f}"),
    ("filtered recall@10", ("query", "filtered", "recall"), "{:.4f}"),
    ("filtered: share with < 10 hits", ("query", "filtered", "short_share"), "{:.3f}"),
    ("query-process peak RSS MB", ("query", "rss_mb"), "{:,.0f}"),
    ("  of it now anonymous (heap) MB", ("query", "rssanon_mb"), "{:,.0f}"),
    ("  of it now file-backed (mapped) MB", ("query", "rssfile_mb"), "{:,.0f}"),
    ("add 1,000 incl. reopen s", ("add", "seconds"), "{:.2f}"),
    ("delete 1,000 incl. reopen s", ("delete", "seconds"), "{:.2f}"),
    ("deleted ids returned (2,000 searches)", "resurfaced", "{:.0f}"),
    ("count after add+delete correct", "count_ok", "{}"),
    ("peak RSS MB, any phase", "peak", "{:,.0f}"),
]


def cell(res: dict, system: str, key: Any) -> Any:
    if key == "peak":
        return peak_rss(res, system)
    if key == "resurfaced":
        a = _get(res, system, "verify", "resurfaced")
        return None if a is None else a + _get(res, system, "verify", "resurfaced_filtered")
    if key == "count_ok":
        c, e = _get(res, system, "verify", "count"), _get(res, system, "verify", "expected")
        return None if c is None else ("yes" if c == e else f"no ({c} vs {e})")
    return _get(res, system, *key)


def table(n: int, res: dict, systems: list[str]) -> str:
    ratios = [(a, b) for a, b in RATIOS if a in systems and b in systems]
    head = ["metric", *systems, *(f"{a.split('-')[1]} / {b}" for a, b in ratios)]
    lines = [f"### {n:,} documents", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for label, key, fmt in ROWS:
        vals = [cell(res, s, key) for s in systems]
        out = [label, *("—" if v is None else fmt.format(v) for v in vals)]
        for a, b in ratios:
            x, y = cell(res, a, key), cell(res, b, key)
            ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and y
            out.append(f"{x / y:.2f}" if ok and key not in ("resurfaced",) else "")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def goals(res: dict) -> list[str]:
    """The goals of issue 7, checked for hubsearch-auto against Chroma."""
    h, c = "hubsearch-auto", "chroma"
    if h not in res or c not in res:
        return ["- not checked: they compare hubsearch-auto with chroma; run both"]
    def ratio(*keys: str) -> float:
        return _get(res, h, *keys) / _get(res, c, *keys)

    try:
        checks = [
            ("ingest >= 3x Chroma docs/s", ratio("ingest", "docs_per_s"), lambda r: r >= 3),
            ("filtered p50 <= 1/5 of Chroma's", ratio("query", "filtered", "p50_ms"),
             lambda r: r <= 0.2),
            ("filtered recall@10 >= 0.99", _get(res, h, "query", "filtered", "recall"),
             lambda r: r >= 0.99),
            ("unfiltered p50 no slower than Chroma's", ratio("query", "plain", "p50_ms"),
             lambda r: r <= 1),
            ("peak RSS <= Chroma's", peak_rss(res, h) / peak_rss(res, c), lambda r: r <= 1),
        ]
    except (TypeError, ZeroDivisionError):
        return ["goals: not checked (a phase failed)"]
    return [f"- {name}: {value:.2f} -> {'met' if ok(value) else 'MISSED'}"
            for name, value, ok in checks]


def banking_table(res: dict) -> str:
    head = ["BANKING77 (use-multilingual)", *res]
    rows = [("model load + warm-up s", "model_load_s", "{:.1f}"),
            ("ingest s (encode+index+persist)", "ingest_s", "{:.1f}"),
            ("ingest docs/s", "docs_per_s", "{:.0f}"),
            ("3,080 queries s (encode+search)", "query_s", "{:.1f}"),
            ("kNN@1 accuracy", "knn1", "{:.4f}"),
            ("peak RSS MB", "rss_mb", "{:,.0f}"),
            ("disk MB", "disk_mb", "{:.1f}")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in rows:
        vals = ["—" if res[s].get(key) is None else fmt.format(res[s][key]) for s in res]
        lines.append("| " + " | ".join([label, *vals]) + " |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    def commit() -> str:
        """The hubsearch code measured: HEAD, and whether engine code had uncommitted edits."""
        try:
            head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "engine",
                                    "indexes", "plugins"], capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return head + (" + uncommitted edits" if dirty.strip() else "")

    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "hubsearch_commit": commit(),
        **{p: ver(p) for p in ("hubsearch", "chromadb", "txtai", "faiss-cpu", "numpy", "torch")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000],
                    help="corpus sizes; none (a bare --sizes) runs only the BANKING77 part")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2,000 docs, 200 queries, 1,000 BANKING77 texts")
    ap.add_argument("--skip-banking", action="store_true")
    ap.add_argument("--banking-limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--json", default=None, help="also write all figures to this file")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--omp-threads", type=int, default=None,
                    help="set OMP_NUM_THREADS for every phase (default: the libraries' own)")
    for hidden in ("--phase", "--system", "--size", "--path", "--corpus"):
        ap.add_argument(hidden, help=argparse.SUPPRESS, type=int if hidden == "--size" else str)
    opts = ap.parse_args()
    if opts.phase:
        return child(opts)
    if opts.quick:
        opts.sizes, opts.queries, opts.banking_limit = [2000], 200, 1000
    if opts.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(opts.omp_threads)  # inherited by every phase
    work = Path(opts.work or tempfile.mkdtemp(prefix="hubsearch-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "children.log"
    env = environment()
    print(f"# peers benchmark; scratch {work}; stderr of phases in {log}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f}; {json.dumps(env)}", flush=True)
    started = time.time()
    report: dict[str, Any] = {"environment": env, "sizes": {}, "load_start": os.getloadavg()}
    for n in opts.sizes:
        report["sizes"][n] = measure_size(n, opts, work, log)
    if not opts.skip_banking:
        report["banking77"] = {}
        for system in BANKING_SYSTEMS:
            path = work / "banking77" / system
            shutil.rmtree(path, ignore_errors=True)
            args = ["--phase", "banking", "--system", system, "--path", str(path)]
            if opts.banking_limit:
                args += ["--banking-limit", str(opts.banking_limit)]
            report["banking77"][system] = run_child(args, log, opts.timeout)
            print(f"  banking77 {system:<15} done", flush=True)
    report["load_end"] = os.getloadavg()
    report["minutes"] = (time.time() - started) / 60
    print()
    for n, res in report["sizes"].items():
        systems = [s for s in opts.systems if s in res]
        print(table(n, res, systems), "\n")
        for s in systems:
            print(f"- {s}: {json.dumps(_get(res, s, 'query', 'settings'))}")
        if n == max(opts.sizes):
            print(f"\nGoals at {n:,} (hubsearch-auto vs chroma):")
            print("\n".join(goals(res)))
        print()
    if "banking77" in report:
        print(banking_table(report["banking77"]), "\n")
    print(f"# load average at end: {report['load_end'][0]:.2f}; took {report['minutes']:.1f} min")
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
