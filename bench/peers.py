"""hubsearch side by side with Chroma, txtai and LanceDB: same corpus, same machine, one run.

    python bench/peers.py --sizes 10000 100000 [--skip-banking] [--quick] [--json FILE]
    python bench/peers.py --markdown FILE     # the tables of a --json file, finished or not

Run it from the peers venv (docs/peers.md: the peers come from bench/requirements-peers.txt and
are not part of the test install, since txtai pulls in torch). Every phase of every system runs
in a fresh process (bench/peers_phases.py); the corpus and its exact answers are built once per
size (bench/peers_corpus.py). Prints one markdown table per size with hubsearch / peer ratios,
the goals of issues 7 and 16 at the largest size, and the BANKING77 run with the real encoder.
Systems whose package is not installed are skipped (and said so). LanceDB's query knobs are
set, per size, for the recall hubsearch-auto reached in the same run (it runs first).
"""

from __future__ import annotations

import argparse
import importlib.util
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

SYSTEMS = ("hubsearch-auto", "hubsearch-flat", "chroma", "txtai", "lancedb-ivfpq", "lancedb-flat")
BANKING_SYSTEMS = ("hubsearch-auto", "chroma", "txtai")
PHASE_ORDER = ("ingest", "open", "query", "add", "delete", "verify")
RATIOS = (("hubsearch-auto", "chroma"), ("hubsearch-auto", "txtai"),
          ("hubsearch-flat", "chroma"), ("hubsearch-flat", "txtai"),
          ("hubsearch-auto", "lancedb-ivfpq"), ("hubsearch-flat", "lancedb-flat"))  # fmt: skip
#: Whose recall the systems with query knobs (LanceDB) are tuned to reach, per size.
MATCH = "hubsearch-auto"
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
        extra = {"match": json.loads(opts.match_recall)} if opts.match_recall else {}
        out = PHASES[opts.phase](opts.system, corpus, path, **extra)
    print(MARK + json.dumps(out, default=str), flush=True)


def measure_size(
    n: int, opts: argparse.Namespace, work: Path, log: Path, results: dict[str, Any]
) -> dict[str, Any]:
    """Every phase of every system at size ``n``, into ``results`` (which the caller saves
    after each phase, so a long run interrupted keeps what it measured)."""
    from peers_corpus import build

    corpus = build(work / f"corpus-{n}", n, opts.queries)
    match = None
    for system in opts.systems:
        path = work / str(n) / system
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        results[system] = {}
        for phase in PHASE_ORDER:
            args = ["--phase", phase, "--system", system, "--size", str(n), "--path", str(path),
                    "--corpus", str(corpus.folder), "--queries", str(opts.queries)]
            if phase == "query" and match and system.startswith("lancedb"):
                args += ["--match-recall", json.dumps(match)]
            out = run_child(args, log, opts.timeout)
            if phase == "query" and system == MATCH and "error" not in out:
                match = {k: out[k]["recall"] for k in ("plain", "filtered")}
            results[system][phase] = out
            opts.save()
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


def lancedb_goals(res: dict) -> list[str]:
    """The goals of issue 16: hubsearch-auto against LanceDB with its IVF_PQ index, and disk
    against Chroma."""
    h, lance, c = "hubsearch-auto", "lancedb-ivfpq", "chroma"
    out = []
    if h in res and lance in res:
        try:
            ours, theirs = _get(res, h, "ingest", "seconds"), _get(res, lance, "ingest", "seconds")
            checks = [
                ("filtered p50 ahead (ours/theirs < 1)",
                 _get(res, h, "query", "filtered", "p50_ms")
                 / _get(res, lance, "query", "filtered", "p50_ms"), lambda r: r < 1),
                ("recall@10 ahead (ours - theirs >= 0)",
                 _get(res, h, "query", "plain", "recall")
                 - _get(res, lance, "query", "plain", "recall"), lambda r: r >= 0),
                ("filtered recall@10 ahead (ours - theirs >= 0)",
                 _get(res, h, "query", "filtered", "recall")
                 - _get(res, lance, "query", "filtered", "recall"), lambda r: r >= 0),
                ("ingest time incl. index build, ours/theirs <= 1", ours / theirs,
                 lambda r: r <= 1),
                ("unfiltered p50 at matched recall, ours/theirs <= 1",
                 _get(res, h, "query", "plain", "p50_ms")
                 / _get(res, lance, "query", "plain", "p50_ms"), lambda r: r <= 1),
                ("disk after ingest, ours/theirs <= 1",
                 _get(res, h, "ingest", "disk_mb") / _get(res, lance, "ingest", "disk_mb"),
                 lambda r: r <= 1),
                ("peak RSS, ours/theirs <= 1", peak_rss(res, h) / peak_rss(res, lance),
                 lambda r: r <= 1),
            ]  # fmt: skip
        except (TypeError, ZeroDivisionError):
            checks = []
            out.append("- LanceDB goals: not checked (a phase failed)")
        out += [f"- {name}: {value:.2f} -> {'met' if ok(value) else 'MISSED'}"
                for name, value, ok in checks]  # fmt: skip
    else:
        out.append("- LanceDB goals: not checked (they compare hubsearch-auto with lancedb-ivfpq)")
    if h in res and c in res and _get(res, c, "ingest", "disk_mb"):
        r = _get(res, h, "ingest", "disk_mb") / _get(res, c, "ingest", "disk_mb")
        out.append(f"- disk <= Chroma's: {r:.2f} -> {'met' if r <= 1 else 'MISSED'}")
    return out


def installed(systems: list[str]) -> list[str]:
    """The systems whose package imports here; the others are named and skipped."""
    from peers_systems import PACKAGES

    found = [s for s in systems if importlib.util.find_spec(PACKAGES[s]) is not None]
    for s in systems:
        if s not in found:
            print(f"# skipped {s}: package {PACKAGES[s]!r} is not installed", flush=True)
    return found


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
        **{p: ver(p) for p in ("hubsearch", "chromadb", "txtai", "lancedb", "faiss-cpu", "numpy",
                               "torch")},
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
    for hidden in ("--phase", "--system", "--size", "--path", "--corpus", "--match-recall"):
        ap.add_argument(hidden, help=argparse.SUPPRESS, type=int if hidden == "--size" else str)
    ap.add_argument("--markdown", metavar="JSON", help="print the tables of a --json file")
    opts = ap.parse_args()
    if opts.phase:
        return child(opts)
    if opts.markdown:
        return print_report(json.loads(Path(opts.markdown).read_text()))
    if opts.quick:
        opts.sizes, opts.queries, opts.banking_limit = [2000], 200, 1000
    if opts.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(opts.omp_threads)  # inherited by every phase
    opts.systems = installed(opts.systems)
    work = Path(opts.work or tempfile.mkdtemp(prefix="hubsearch-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "children.log"
    env = environment()
    print(f"# peers benchmark; scratch {work}; stderr of phases in {log}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f}; {json.dumps(env)}", flush=True)
    started = time.time()
    report: dict[str, Any] = {"environment": env, "sizes": {}, "load_start": os.getloadavg()}

    def save() -> None:
        if opts.json:
            Path(opts.json).write_text(json.dumps(report, indent=1, default=str))

    opts.save = save
    for n in opts.sizes:
        report["sizes"][n] = {}
        measure_size(n, opts, work, log, report["sizes"][n])
    if not opts.skip_banking:
        report["banking77"] = {}
        for system in installed(list(BANKING_SYSTEMS)):
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
    print_report(report, opts.systems)
    save()


def print_report(report: dict[str, Any], order: list[str] | None = None) -> None:
    """The tables, settings and goals of a run (or of a --json file, finished or not)."""
    sizes = report["sizes"]
    for n, res in sizes.items():
        systems = [s for s in (order or list(SYSTEMS)) if s in res]
        loads = [p["load_before"] for r in res.values() for p in r.values() if "load_before" in p]
        if loads:
            print(f"load average before the phases: {min(loads):.1f}-{max(loads):.1f}")
        print(table(int(n), res, systems), "\n")
        for s in systems:
            print(f"- {s}: {json.dumps(_get(res, s, 'query', 'settings'))}")
            for label in ("plain", "filtered"):
                cal = _get(res, s, "query", f"{label}_calibration")
                if cal:
                    print(f"  {label} calibration: {json.dumps(cal)}")
        if int(n) == max(int(x) for x in sizes):
            print(f"\nGoals at {int(n):,} (hubsearch-auto vs chroma):")
            print("\n".join(goals(res)))
            print(f"\nGoals of issue 16 at {int(n):,} (auto vs lancedb-ivfpq; disk vs chroma):")
            print("\n".join(lancedb_goals(res)))
        print()
    if "banking77" in report:
        print(banking_table(report["banking77"]), "\n")
    if "load_end" in report:
        print(f"# load average at end: {report['load_end'][0]:.2f}; took "
              f"{report['minutes']:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
