"""`hubsearch serve` under load, against Chroma's own server (`chroma run`), on loopback.

The same load generator (asyncio + httpx, HTTP/1.1 keep-alive, JSON bodies of float lists for
both systems, serialised before the clock starts) sends the same queries to each server:
closed loop at 16 and 64 concurrent clients (each sends its next query when the last one is
answered), then open loop at fixed offered rates (latency counted from the scheduled send, so
a server that falls behind shows it), unfiltered and filtered on one of 20 categories. The
generator's own CPU use is printed next to each figure (percent of one core), since it shares
the machine with the server, and so is each server's own CPU time per answered query. Both
servers stay up and each cell is measured for both systems back to back; the loaded
collections are cached under ``--cache``. ``--text`` measures text queries with the bundled
multilingual encoder at 32 clients, with and without micro-batching (by default with
bench/rawload.py, a generator that leaves the cores to the server). ``--mixed`` runs one
client adding batches of 100 while 32 search, then looks up every acknowledged document and
reports the server's RSS after the warm-up and at the end.

Chroma runs from its own virtual environment (``--chroma`` names its ``chroma`` command; see
docs/peers.md), never the project's.

    python bench/serve.py --n 100000 --seconds 10 --rates 50 150 --chroma .venv-chroma/bin/chroma
    python bench/serve.py --mixed --n 100000 --seconds 300
    python bench/serve.py --text --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # before bench/, whose engine.py would shadow the package

import rawload  # noqa: E402
from peers_corpus import build, doc_id  # noqa: E402

BANKING = REPO.parent / "shared" / "data" / "banking77"
CHROMA_API = "/api/v2/tenants/default_tenant/databases/default_database/collections"
K = 10


# -- servers --------------------------------------------------------------------------------


def start_hubsearch(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "--home",
            str(home),
            "serve",
            "--port",
            "0",
            "--no-access-log",
            *args,
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            url = line.split("listening on ")[1].split()[0]
            break
    else:
        raise RuntimeError("hubsearch serve did not start")
    wait_ready(url + "/readyz", proc)
    return proc, url


def start_chroma(path: Path, chroma: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/api/v2/heartbeat", proc)
    return proc, url


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- loading --------------------------------------------------------------------------------


def load_hubsearch(home: Path, corpus, index: str) -> None:
    from engine import Engine

    x = corpus.vectors()[: corpus.n]
    category, lang = corpus.labels()
    col = Engine(home).create(
        "bench", encoder="precomputed", index=index, options={"dim": x.shape[1], "space": "b"}
    )
    meta = [{"category": int(category[r]), "lang": int(lang[r])} for r in range(corpus.n)]
    col.add(vectors=x, ids=[doc_id(r) for r in range(corpus.n)], metadata=meta)
    col.checkpoint()


CHROMA_LOAD = """
import sys, numpy as np, chromadb
from chromadb.config import Settings
folder, n, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
x = np.load(folder + "/docs.npy", mmap_mode="r")[:n]
labels = np.load(folder + "/labels.npz")
client = chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))
col = client.create_collection("bench", configuration={"hnsw": {"space": "ip"}},
                               embedding_function=None)
step = min(5000, client.get_max_batch_size())
for s in range(0, n, step):
    e = min(n, s + step)
    col.add(ids=[f"d{r}" for r in range(s, e)], embeddings=np.ascontiguousarray(x[s:e]),
            metadatas=[{"category": int(labels["category"][r]), "lang": int(labels["lang"][r])}
                       for r in range(s, e)])
print(col.count())
"""


def load_chroma(url: str, corpus, chroma: str) -> str:
    python = str(Path(chroma).with_name("python"))
    host, port = url.split("//")[1].split(":")
    subprocess.run(
        [python, "-c", CHROMA_LOAD, str(corpus.folder), str(corpus.n), host, port], check=True
    )
    return httpx.get(f"{url}{CHROMA_API}/bench").json()["id"]


def cached_hubsearch(cache: Path, corpus, index: str) -> Path:
    """The loaded hubsearch home for this corpus and index kind, loaded once under ``cache``
    (loading 100,000 vectors into a graph takes minutes on this machine; reruns reuse it)."""
    home = cache / f"serve-hub-{corpus.n}-{index}"
    stamp = home / "loaded.json"
    if not stamp.exists():
        shutil.rmtree(home, ignore_errors=True)
        load_hubsearch(home, corpus, index)
        stamp.write_text(json.dumps({"n": corpus.n, "index": index}))
    return home


def cached_chroma(cache: Path, corpus, chroma: str) -> tuple[subprocess.Popen, str, str]:
    """Chroma's server over its persisted folder for this corpus, loaded on the first run."""
    path = cache / f"serve-chroma-{corpus.n}"
    proc, url = start_chroma(path, chroma)
    r = httpx.get(f"{url}{CHROMA_API}/bench")
    if r.status_code == 200:
        cid = r.json()["id"]
        if httpx.get(f"{url}{CHROMA_API}/{cid}/count").json() == corpus.n:
            return proc, url, cid
        httpx.delete(f"{url}{CHROMA_API}/bench").raise_for_status()
    return proc, url, load_chroma(url, corpus, chroma)


# -- requests -------------------------------------------------------------------------------


def hubsearch_requests(url: str, q: np.ndarray, cats: np.ndarray | None) -> tuple[str, list]:
    bodies = [
        json.dumps(
            {"vector": v.tolist(), "k": K, "where": None if cats is None else {"category": int(c)}}
        ).encode()
        for v, c in zip(q, cats if cats is not None else [None] * len(q), strict=True)
    ]
    return f"{url}/collections/bench/search", bodies


def chroma_requests(url: str, cid: str, q: np.ndarray, cats: np.ndarray | None) -> tuple[str, list]:
    bodies = []
    for i, v in enumerate(q):
        body = {"query_embeddings": [v.tolist()], "n_results": K, "include": ["distances"]}
        if cats is not None:
            body["where"] = {"category": int(cats[i])}
        bodies.append(json.dumps(body).encode())
    return f"{url}{CHROMA_API}/{cid}/query", bodies


def ids_of(system: str, answer: dict) -> list[str]:
    if system == "chroma":
        return answer["ids"][0]
    return [h["id"] for h in answer["hits"]]


def recall(system: str, target: str, bodies: list, truth: np.ndarray, n: int = 100) -> float:
    found = 0
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            r = client.post(target, content=bodies[i], headers=JSON)
            r.raise_for_status()
            got = {int(x[1:]) for x in ids_of(system, r.json())}
            found += len(got & set(truth[i].tolist()))
    return found / (n * K)


JSON = {"Content-Type": "application/json"}


# -- load generation ------------------------------------------------------------------------


def summary(latencies: list[float], errors: int, wall: float, cpu: float) -> dict:
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "qps": len(latencies) / wall,
        "answered": len(latencies),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "generator_cpu_pct": 100 * cpu / wall,
    }


async def closed_loop(target: str, bodies: list, clients: int, seconds: float) -> dict:
    why: list[str] = []  # the first few errors, to say what they were
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(
            *(client.post(target, content=bodies[i], headers=JSON) for i in range(clients))
        )  # connections open before the clock

        async def send(w: int, i: int) -> bool:
            try:
                r = await client.post(target, content=bodies[i % len(bodies)], headers=JSON)
            except httpx.HTTPError as exc:
                why.append(repr(exc)[:160])
                return False
            if r.status_code != 200:
                why.append(f"{r.status_code} {r.text[:160]}")
            return r.status_code == 200

        out = summary(*await rawload.workers(clients, seconds, send))
        return {**out, "error_samples": why[:3]} if why else out


async def generated(generator: str, target: str, bodies: list, clients: int, seconds: float):
    """A closed loop from ``generator``: "raw" (bench/rawload.py, ~0.06 ms of CPU a request,
    so the cores go to the server) or "httpx" (~4-5 ms a request: at a few hundred requests a
    second the generator, not the server, is the limit)."""
    if generator == "httpx":
        return await closed_loop(target, bodies, clients, seconds)
    got = await rawload.closed_loop(target, rawload.post_requests(target, bodies), clients, seconds)
    return summary(got["latencies"], got["errors"], got["wall"], got["cpu"])


async def open_loop(target: str, bodies: list, rate: float, seconds: float) -> dict:
    """Sends at ``rate`` for ``seconds`` whatever the answers; what is not answered within
    ``seconds`` after the last send counts as an error (the server fell behind)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        cpu0, t0 = time.process_time(), time.perf_counter()

        async def one(i: int, due: float) -> None:
            nonlocal errors
            try:
                r = await client.post(target, content=bodies[i % len(bodies)], headers=JSON)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - due)  # queueing in the server counts
            else:
                errors += 1

        tasks = []
        for i in range(int(rate * seconds)):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        _, late = await asyncio.wait(tasks, timeout=seconds)
        for task in late:
            task.cancel()
        errors += len(late)
        wall = time.perf_counter() - t0
        out = summary(latencies, errors, wall, time.process_time() - cpu0)
        out["offered_qps"] = rate
        out["unanswered"] = len(late)
        return out


# -- the runs -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process, its threads and its live child processes
    (``--workers``), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def vector_bench(args: argparse.Namespace) -> list[dict]:
    """Every cell (query kind x load) is measured for each system back to back, both servers
    up throughout: on a shared machine the load of other work drifts within minutes, and
    interleaving gives the two systems of a ratio the same conditions. The server's own CPU
    time per answered query is recorded too, a figure that load on the machine moves less."""
    corpus = build(Path(args.cache) / f"corpus-{args.n}", args.n, queries=1000)
    q, qcat = corpus.query_set()
    truths = dict(zip(("unfiltered", "filtered"), corpus.truth(), strict=True))
    servers: dict[str, tuple[subprocess.Popen, dict]] = {}
    rows = []
    try:
        proc, url = start_hubsearch(
            cached_hubsearch(Path(args.cache), corpus, args.index), "--workers", str(args.workers)
        )
        servers["hubsearch"] = proc, {
            "unfiltered": hubsearch_requests(url, q, None),
            "filtered": hubsearch_requests(url, q, qcat),
        }
        if args.chroma:
            proc, url, cid = cached_chroma(Path(args.cache), corpus, args.chroma)
            servers["chroma"] = proc, {
                "unfiltered": chroma_requests(url, cid, q, None),
                "filtered": chroma_requests(url, cid, q, qcat),
            }
        for kind, truth in truths.items():
            found = {
                system: recall(system, *requests[kind], truth)
                for system, (_, requests) in servers.items()
            }
            closed = functools.partial(generated, args.generator)
            loads = [(f"{c} clients", closed, c) for c in args.clients] + [
                (f"{r:g}/s offered", open_loop, r) for r in args.rates
            ]
            for load, loop, amount in loads:
                for system, (proc, requests) in servers.items():
                    target, bodies = requests[kind]
                    cpu0 = cpu_seconds(proc.pid)
                    res = asyncio.run(loop(target, bodies, amount, args.seconds))
                    rows.append(
                        {
                            "system": system,
                            "query": kind,
                            "load": load,
                            **({"workers": args.workers} if system == "hubsearch" else {}),
                            **({"generator": args.generator} if loop is closed else {}),
                            "recall@10": found[system],
                            **res,
                            "server_cpu_ms_per_q": 1000
                            * (cpu_seconds(proc.pid) - cpu0)
                            / max(res["answered"], 1),
                            "load_avg": os.getloadavg()[0],
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    return rows


def text_bench(args: argparse.Namespace) -> list[dict]:
    """Text queries at 32 clients, micro-batching off (window 0: one engine call, so one encode,
    per query) and on, in the same run; hybrid (the collection's default: it has a keyword
    index) and ``mode="vector"`` (the encoder and the index only). The server's own CPU per
    query is read from /proc: on a shared machine it is steadier than queries/s."""
    from engine import Engine

    with open(BANKING / "train.csv", newline="") as f:
        docs = [row["text"] for row in csv.DictReader(f)][:2000]
    with open(BANKING / "test.csv", newline="") as f:
        queries = [row["text"] for row in csv.DictReader(f)]
    home = Path(tempfile.mkdtemp(prefix="bench-serve-text-"))
    Engine(home).create("faq", encoder="use-multilingual", index="flat").add(
        texts=docs, ids=[str(i) for i in range(len(docs))]
    )
    rows = []
    for window in args.windows:
        proc, url = start_hubsearch(home, "--batch-window-ms", str(window))
        try:
            target = f"{url}/collections/faq/search"
            for mode in args.modes:
                extra = {} if mode == "hybrid" else {"mode": mode}
                bodies = [json.dumps({"query": t, "k": K, **extra}).encode() for t in queries]
                for body in bodies[:20]:  # the graph's first calls trace it: not in the figure
                    httpx.post(target, content=body, headers=JSON, timeout=120).raise_for_status()
                before = encoder_counts(url)
                cpu0 = cpu_seconds(proc.pid)
                res = asyncio.run(generated(args.generator, target, bodies, 32, args.seconds))
                server_cpu = cpu_seconds(proc.pid) - cpu0
                calls, encoded = (a - b for a, b in zip(encoder_counts(url), before, strict=True))
                answered = res["qps"] * args.seconds
                rows.append(
                    {
                        "system": "hubsearch",
                        "query": f"text (use-multilingual), {mode}",
                        "load": f"32 clients, {args.generator} generator",
                        "batch_window_ms": window,
                        "mean_batch": encoded / max(calls, 1),
                        **res,
                        "server_cpu_pct": 100 * server_cpu / args.seconds,
                        "server_cpu_ms_per_q": 1000 * server_cpu / max(answered, 1),
                        "load_avg": os.getloadavg()[0],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            stop(proc)
    shutil.rmtree(home, ignore_errors=True)
    for mode in args.modes:
        off = [r for r in rows if r["batch_window_ms"] == 0 and r["query"].endswith(mode)]
        for r in rows:
            if off and r["batch_window_ms"] and r["query"].endswith(mode):
                print(
                    f"{mode}, window {r['batch_window_ms']:g} ms: {r['qps'] / off[0]['qps']:.2f}x "
                    f"queries/s, {off[0]['server_cpu_ms_per_q'] / r['server_cpu_ms_per_q']:.2f}x "
                    "less server CPU per query than one encode per request"
                )
    return rows


def encoder_counts(url: str) -> tuple[int, int]:
    """(encoder calls, texts encoded) from the server's /metrics."""
    text = httpx.get(url + "/metrics").text
    return tuple(  # type: ignore[return-value]
        int(next(x.split()[-1] for x in text.splitlines() if x.startswith(name)))
        for name in ("hubsearch_query_encoder_calls_total", "hubsearch_queries_encoded_total")
    )


def rss_mb(pid: int) -> dict[str, float]:
    """Resident set size of a process from /proc (MB): in all, anonymous (the heap, the
    graph) and file-backed (mapped files, whose pages the kernel may drop)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def new_documents(corpus, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` new unit vectors near the corpus's documents (so they land inside its
    clusters, where the graph is dense), and their categories."""
    x = corpus.vectors(mmap=True)
    near = np.asarray(x[np.sort(rng.integers(0, corpus.n, batch))], dtype=np.float32)
    v = near + rng.standard_normal(near.shape, dtype=np.float32) * np.float32(0.1 / np.sqrt(512))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, rng.integers(0, 20, batch)


async def add_loop(
    url: str, corpus, seconds: float, batch: int, acked: dict, ack_times: list
) -> dict:
    """One client adding ``batch`` documents a request, back to back, for ``seconds``; every
    add answered 200 goes into ``acked`` (id -> (vector, category)), its time into
    ``ack_times`` (seconds from the start)."""
    rng = np.random.default_rng(11)
    latencies: list[float] = []
    errors: list[str] = []
    target = f"{url}/collections/bench/add"
    async with httpx.AsyncClient(timeout=60) as client:
        t0 = time.perf_counter()
        end = t0 + seconds
        b = 0
        while time.perf_counter() < end:
            v, cat = new_documents(corpus, rng, batch)
            ids = [f"m{b * batch + j}" for j in range(batch)]
            body = json.dumps(
                {
                    "vectors_b64": base64.b64encode(v.astype("<f4").tobytes()).decode(),
                    "ids": ids,
                    "metadata": [{"category": int(c), "lang": 0} for c in cat],
                }
            ).encode()
            start = time.perf_counter()
            try:
                r = await client.post(target, content=body, headers=JSON)
                ok, why = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                ok, why = False, repr(exc)
            if ok:
                latencies.append(time.perf_counter() - start)
                ack_times.append(time.perf_counter() - t0)
                for j, i in enumerate(ids):
                    acked[i] = (v[j], int(cat[j]))
            else:
                errors.append(why)
            b += 1
    lat = np.array(latencies or [np.nan]) * 1000
    return {
        "batches": len(latencies),
        "adds_per_s": len(latencies) * batch / seconds,
        "add_p50_ms": float(np.percentile(lat, 50)),
        "add_p99_ms": float(np.percentile(lat, 99)),
        "add_errors": len(errors),
        "add_error_samples": errors[:3],
    }


async def sample_rss(pid: int, seconds: float, every: float, samples: list) -> None:
    t0 = time.perf_counter()
    while (t := time.perf_counter() - t0) < seconds:
        samples.append({"t": round(t, 1), **rss_mb(pid)})
        await asyncio.sleep(every)
    samples.append({"t": round(time.perf_counter() - t0, 1), **rss_mb(pid)})


def verify_acked(url: str, acked: dict, step: int = 500) -> dict:
    """Every acknowledged document, looked up afterwards: by id (``get``), by its own vector
    unfiltered (the graph's walk, k=10: found first / among the 10) and by its own vector
    filtered on its own category (scored exactly by the planner: must come first)."""
    ids = list(acked)
    missing_get = walk_first = walk_top = exact_first = 0
    with httpx.Client(timeout=300) as client:
        for s in range(0, len(ids), step):
            part = ids[s : s + step]
            r = client.post(f"{url}/collections/bench/get", json={"ids": part})
            r.raise_for_status()
            docs = r.json()["documents"]
            missing_get += sum(d is None or d["id"] != i for d, i in zip(docs, part, strict=True))
            v = np.stack([acked[i][0] for i in part]).astype("<f4")
            r = client.post(
                f"{url}/collections/bench/search_many",
                json={"vectors_b64": base64.b64encode(v.tobytes()).decode(), "k": K},
            )
            r.raise_for_status()
            for hits, i in zip(r.json()["results"], part, strict=True):
                walk_first += bool(hits) and hits[0]["id"] == i
                walk_top += any(h["id"] == i for h in hits)
        by_cat: dict[int, list[str]] = {}
        for i in ids:
            by_cat.setdefault(acked[i][1], []).append(i)
        for cat, members in by_cat.items():
            for s in range(0, len(members), step):
                part = members[s : s + step]
                v = np.stack([acked[i][0] for i in part]).astype("<f4")
                r = client.post(
                    f"{url}/collections/bench/search_many",
                    json={
                        "vectors_b64": base64.b64encode(v.tobytes()).decode(),
                        "k": 1,
                        "where": {"category": cat},
                    },
                )
                r.raise_for_status()
                exact_first += sum(
                    bool(h) and h[0]["id"] == i
                    for h, i in zip(r.json()["results"], part, strict=True)
                )
        count = client.get(f"{url}/collections/bench/count").json()["count"]
    return {
        "acknowledged": len(ids),
        "missing_by_id": missing_get,
        "first_by_own_vector_exact": exact_first,
        "first_by_own_vector_hnsw": walk_first,
        "in_top10_hnsw": walk_top,
        "count_after": count,
    }


def mixed_bench(args: argparse.Namespace) -> list[dict]:
    """Issue 15's mixed load: 1 client adding batches of 100 while 32 search, for
    ``--seconds``; then every acknowledged add is looked up, and the server's RSS after the
    warm-up (``--warmup`` seconds) is compared with its RSS at the end."""
    corpus = build(Path(args.cache) / f"corpus-{args.n}", args.n, queries=1000)
    q, qcat = corpus.query_set()
    home = Path(tempfile.mkdtemp(prefix="servebench-mixed-", dir=args.cache))
    shutil.copytree(cached_hubsearch(Path(args.cache), corpus, args.index), home / "h")
    proc, url = start_hubsearch(home / "h")
    try:
        target, plain = hubsearch_requests(url, q, None)
        _, filtered = hubsearch_requests(url, q, qcat)
        bodies = [b for pair in zip(plain, filtered, strict=True) for b in pair]  # half filtered
        acked: dict = {}
        ack_times: list = []
        samples: list = []
        rss_start = rss_mb(proc.pid)

        async def run() -> tuple[dict, dict]:
            searches, adds, _ = await asyncio.gather(
                closed_loop(target, bodies, args.search_clients, args.seconds),
                add_loop(url, corpus, args.seconds, args.add_batch, acked, ack_times),
                sample_rss(proc.pid, args.seconds, args.rss_every, samples),
            )
            return searches, adds

        load0 = os.getloadavg()
        searches, adds = asyncio.run(run())
        load1 = os.getloadavg()
        check = verify_acked(url, acked)
        check["count_expected"] = corpus.n + len(acked)
        warm = next((x for x in samples if x["t"] >= args.warmup), samples[-1])
        end = samples[-1]
        row = {
            "system": "hubsearch",
            "query": f"mixed: {args.search_clients} searching (half filtered), 1 adding "
            f"{args.add_batch} a batch",
            "load": f"{args.seconds:g} s",
            **searches,
            **adds,
            **check,
            "rss_start_mb": rss_start["VmRSS"],
            "rss_after_warmup_mb": warm["VmRSS"],
            "rss_end_mb": end["VmRSS"],
            "rss_max_mb": max(x["VmRSS"] for x in samples),
            "rss_growth_after_warmup_pct": 100 * (end["VmRSS"] / warm["VmRSS"] - 1),
            "anon_growth_after_warmup_mb": end["RssAnon"] - warm["RssAnon"],
            "file_growth_after_warmup_mb": end["RssFile"] - warm["RssFile"],
            "docs_added_after_warmup": sum(
                args.add_batch for t in ack_times if t >= warm["t"]
            ),
            "load_avg_start": load0,
            "load_avg_end": load1,
            "rss_samples": samples,
            "load_avg": load1[0],
        }
    finally:
        stop(proc)
    from engine import Engine

    index = Engine(home / "h").open("bench").view.load_index()
    per_doc = index.memory_bytes() / max(len(index), 1)
    row["index_bytes_per_doc"] = per_doc
    row["expected_growth_after_warmup_mb"] = row["docs_added_after_warmup"] * per_doc / 2**20
    print(json.dumps(row), flush=True)
    shutil.rmtree(home, ignore_errors=True)
    return [row]


def table(rows: list[dict]) -> None:
    keys = [
        k
        for k in (
            "system",
            "query",
            "load",
            "batch_window_ms",
            "mean_batch",
            "recall@10",
            "qps",
            "p50_ms",
            "p99_ms",
            "errors",
            "generator_cpu_pct",
            "server_cpu_pct",
            "server_cpu_ms_per_q",
            "load_avg",
        )
        if any(k in r for r in rows)
    ]
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for r in rows:
        cells = [r.get(k, "") for k in keys]
        print(
            "| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )
    by = {(r["system"], r["query"], r["load"]): r for r in rows if "recall@10" in r}
    for (system, query, load), r in sorted(by.items()):
        other = by.get(("chroma", query, load))
        if system == "hubsearch" and other:
            print(
                f"{query}, {load}: hubsearch / chroma queries/s = {r['qps'] / other['qps']:.2f}x,"
                f" p99 {r['p99_ms']:.1f} vs {other['p99_ms']:.1f} ms"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="documents (the goal is 100,000)")
    p.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    p.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    p.add_argument("--rates", type=float, nargs="*", default=[200.0, 500.0])
    p.add_argument(
        "--index",
        default="hnsw",
        help="hubsearch's index kind (Chroma's is HNSW; auto is flat "
        "below its exact_max and hnsw above)",
    )
    p.add_argument("--chroma", help="Chroma's `chroma` command, in its own venv")
    p.add_argument(
        "--workers", type=int, default=1, help="hubsearch serve --workers (vector queries)"
    )
    p.add_argument("--text", action="store_true", help="text queries: micro-batching on/off")
    p.add_argument("--windows", type=float, nargs="+", default=[0.0, 3.0])
    p.add_argument("--modes", nargs="+", default=["hybrid", "vector"], help="--text: modes")
    p.add_argument(
        "--generator",
        choices=["raw", "httpx"],
        default="raw",
        help="closed-loop load generator (bench/rawload.py spends ~1/50 of httpx's CPU per "
        "request); open loops use httpx",
    )
    p.add_argument("--mixed", action="store_true", help="adds of --add-batch while searching")
    p.add_argument("--search-clients", type=int, default=32, help="with --mixed")
    p.add_argument("--add-batch", type=int, default=100, help="with --mixed")
    p.add_argument("--warmup", type=float, default=30.0, help="with --mixed: RSS growth from here")
    p.add_argument("--rss-every", type=float, default=3.0, help="with --mixed: seconds")
    p.add_argument("--cache", default=str(HERE / "out"))
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if args.mixed:
        rows = mixed_bench(args)
    else:
        rows = text_bench(args) if args.text else vector_bench(args)
    table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
