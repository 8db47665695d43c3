"""`hubsearch serve` and `RemoteEngine`, against real server processes (never a mock)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serving import ServerProcess  # noqa: E402

from engine import (  # noqa: E402
    BadInput,
    CollectionExists,
    CollectionLocked,
    CollectionNotFound,
    Engine,
    RemoteEngine,
)
from engine.serve import wire  # noqa: E402

READ, WRITE, ADMIN = "r" * 24, "w" * 24, "a" * 24
DIM = 8


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("serve_home")


@pytest.fixture(scope="module")
def server(home, tmp_path_factory, fake_site):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(
        f"# test keys\n{READ} read reader\n{WRITE} read,write writer\n"
        f"{ADMIN} read,write,admin admin\n"
    )
    srv = ServerProcess(
        home,
        "--api-keys",
        str(keys),
        "--max-batch",
        "500",
        "--max-body-mb",
        "1",
        "--cors-origin",
        "https://desk.example",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server):
    return RemoteEngine(server.url, api_key=ADMIN)


@pytest.fixture(scope="module")
def vecs(admin):
    col = admin.create("vecs", encoder="precomputed", index="flat", options={"dim": DIM})
    meta = [{"lang": ["en", "de"][i % 2], "n": i} for i in range(300)]
    col.add(vectors=vectors(300), ids=[f"d{i}" for i in range(300)], metadata=meta)
    return col


def http(server, method, path, key=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def test_remote_collection_answers_as_the_embedded_one(server, home, vecs, admin):
    local = Engine(home).open("vecs")
    q = vectors(3, seed=7)
    for where in (None, {"lang": "de"}, {"n": {"$lt": 40}}):
        remote = vecs.search(vector=q[0], k=5, where=where)
        here = local.search(vector=q[0], k=5, where=where)
        assert remote == here  # the same Hits: ids, scores, similarity, content, metadata
        assert np.allclose([h.score for h in remote], [h.score for h in here], atol=1e-6)
    floor = local.search(vector=q[1], k=20)[9].score  # min_score travels: 10 of 20 pass
    remote = vecs.search(vector=q[1], k=20, min_score=floor)
    assert [h.id for h in remote] == [h.id for h in local.search(vector=q[1], k=20)][:10]
    many = vecs.search_many(vectors=q, k=3, where={"lang": "en"})
    assert [[h.id for h in hits] for hits in many] == [
        [h.id for h in hits] for hits in local.search_many(vectors=q, k=3, where={"lang": "en"})
    ]
    assert vecs.get(["d1", "nope"]) == local.get(["d1", "nope"])
    report = vecs.add(vectors=vectors(2, seed=9), ids=["d1", "x1"], metadata=[{"n": 1}, None])
    assert (report.added, report.updated, report.unchanged) == (1, 1, 0)
    assert vecs.count() == local.count() == 301
    assert vecs.delete(["x1", "never"]) == 1
    assert admin.info("vecs").count == 300
    assert vecs.reindex("hnsw").index["kind"] == "hnsw"
    assert vecs.compact().count == 300
    assert "vecs" in admin.list()


def test_errors_are_the_engines_exceptions_with_json_bodies(server, vecs, admin):
    with pytest.raises(CollectionNotFound, match="no collection named 'ghost'"):
        admin.open("ghost")
    with pytest.raises(CollectionExists):
        admin.create("vecs", encoder="precomputed", options={"dim": DIM})
    with pytest.raises(BadInput, match="over the limit of 10000"):
        vecs.search(vector=vectors(1)[0], k=10_001)
    with pytest.raises(BadInput, match="zzz"):
        vecs.search(vector=vectors(1)[0], where={"zzz": 1})
    with pytest.raises(BadInput, match="not allowed"):
        admin.open("../etc")
    with pytest.raises(BadInput, match="not allowed"):
        admin.create("a b", encoder="precomputed", options={"dim": 2})
    cases = [
        ("POST", "/collections/vecs/search", {"vector": [1.0] * DIM, "k": 0}, 400, "BadInput"),
        ("POST", "/collections/vecs/search", {"query": "a text"}, 400, "BadInput"),
        (
            "POST",
            "/collections/vecs/search",
            {"query": "a", "vector": [1.0] * DIM},
            400,
            "BadInput",
        ),
        ("POST", "/collections/vecs/search", {"vector": "x"}, 422, "InvalidRequest"),
        ("POST", "/collections/vecs/search", {"vektor": [1.0]}, 422, "InvalidRequest"),
        ("GET", "/collections/ghost", None, 404, "CollectionNotFound"),
        ("GET", "/no/such/route", None, 404, "NotFound"),
    ]
    for method, path, body, status, type_ in cases:
        r = http(server, method, path, ADMIN, json=body)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["type"] == type_
        assert "Traceback" not in r.text
    r = http(
        server,
        "POST",
        "/collections/vecs/search",
        ADMIN,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]["type"]) == (422, "InvalidRequest")


def test_keys_and_scopes(server, vecs):
    body = {"vectors": [[0.5] * DIM], "ids": ["k1"]}
    assert http(server, "GET", "/collections").status_code == 401
    assert http(server, "GET", "/collections", "x" * 24).status_code == 401
    assert http(server, "GET", "/collections", READ).status_code == 200
    assert http(server, "GET", "/collections", headers={"X-API-Key": READ}).status_code == 200
    r = http(server, "POST", "/collections/vecs/add", READ, json=body)
    assert (r.status_code, r.json()["error"]["type"]) == (403, "Forbidden")
    assert http(server, "POST", "/collections/vecs/add", WRITE, json=body).status_code == 200
    create = {"name": "w", "encoder": "precomputed", "options": {"dim": 2}}
    assert http(server, "POST", "/collections", WRITE, json=create).status_code == 403
    assert http(server, "DELETE", "/collections/vecs", WRITE).status_code == 403
    assert http(server, "GET", "/healthz").status_code == 200  # probes need no key
    with pytest.raises(wire.Forbidden):
        RemoteEngine(server.url, api_key=READ).open("vecs").delete(["k1"])
    with pytest.raises(wire.Unauthorized):
        RemoteEngine(server.url).list()
    time.sleep(0.2)
    log = "".join(server.lines)
    assert not any(key in log for key in (READ, WRITE, ADMIN, "x" * 24))
    labels = {rec["key"] for rec in server.access_log()}
    assert {"reader", "writer"} <= labels
    assert all({"method", "path", "status", "ms"} <= set(rec) for rec in server.access_log())


def test_body_batch_and_k_limits(server, vecs):
    with pytest.raises(wire.TooLarge, match="batch limit of 500"):
        vecs.add(vectors=vectors(501), ids=[f"t{i}" for i in range(501)])
    assert isinstance(wire.TooLarge("", 413, "TooLarge"), BadInput)
    big = {"texts": ["x" * (2 * 2**20)], "ids": ["big"]}
    r = http(server, "POST", "/collections/vecs/add", WRITE, json=big)
    assert (r.status_code, r.json()["error"]["type"]) == (413, "TooLarge")
    r = http(
        server, "POST", "/collections/vecs/search_many", READ, json={"vectors": [[1.0] * DIM] * 501}
    )
    assert r.status_code == 413
    assert vecs.get(["t0", "big"]) == [None, None]  # nothing of a refused add was stored


def test_cors_only_for_listed_origins(server):
    pre = {"Access-Control-Request-Method": "POST"}
    ok = http(server, "OPTIONS", "/collections", headers={"Origin": "https://desk.example", **pre})
    assert ok.headers.get("access-control-allow-origin") == "https://desk.example"
    bad = http(server, "OPTIONS", "/collections", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in bad.headers


def test_metrics_openapi_and_docs(server, vecs):
    vecs.search(vector=vectors(1)[0], k=2)
    text = http(server, "GET", "/metrics", READ).text
    assert (
        'hubsearch_requests_total{route="/collections/{name}/search",method="POST",status="200"}'
        in text
    )
    assert (
        'hubsearch_request_duration_seconds_bucket{route="/collections/{name}/search",method="POST",le="+Inf"}'
        in text
    )
    assert f'hubsearch_documents{{collection="vecs"}} {vecs.count()}' in text
    assert 'hubsearch_index_info{collection="vecs",kind=' in text
    assert http(server, "GET", "/metrics").status_code == 401
    schema = http(server, "GET", "/openapi.json").json()
    assert "/collections/{name}/search" in schema["paths"]
    assert "swagger" in http(server, "GET", "/docs").text.lower()


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, "PNG")
    return buf.getvalue()


def test_uploaded_images_are_kept_and_served_with_auth(server, home, admin, tmp_path):
    pics = admin.create("pics", encoder="fake-pixels", index="flat")
    red, blue = _png((250, 0, 0)), _png((0, 0, 250))
    files = [
        ("files", ("red.png", red, "image/png")),
        ("files", ("junk.png", b"nope", "image/png")),
    ]
    r = http(
        server,
        "POST",
        "/collections/pics/images",
        WRITE,
        files=files,
        data={"metadata": json.dumps([{"c": "red"}, {"c": "?"}])},
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1 and r.json()["skipped"][0][0] == "junk.png"
    (tmp_path / "blue.png").write_bytes(blue)
    assert pics.add(images=[tmp_path / "blue.png"], metadata=[{"c": "blue"}]).added == 1
    hits = pics.search(image=_png((240, 10, 10)), k=2)
    assert [h.id for h in hits] == ["red.png", "blue.png"]
    assert hits[0].content.startswith("/collections/pics/blobs/") and hits[0].modality == "image"
    assert pics.fetch(hits[0].content) == red
    assert http(server, "GET", hits[0].content).status_code == 401
    assert http(server, "GET", "/collections/pics/blobs/..%2Fstore.sqlite", READ).status_code == 404
    stored = sorted(p.name for p in (home / "pics" / "blobs").iterdir())
    assert len(stored) == 2 and all(len(n.split(".")[0]) == 64 for n in stored)
    r = http(
        server,
        "POST",
        "/collections/pics/search/image",
        READ,
        files={"file": ("q.png", blue, "image/png")},
        data={"k": "1"},
    )
    assert r.json()["hits"][0]["id"] == "blue.png"
    b64 = {"images": [base64.b64encode(red).decode()], "ids": ["again"]}
    assert http(server, "POST", "/collections/pics/add", WRITE, json=b64).json()["added"] == 1
    assert len(list((home / "pics" / "blobs").iterdir())) == 2  # same bytes, one file


def _upload(server, name, data, doc_id):
    files = [("files", (f"{doc_id}.png", data, "image/png"))]
    r = http(server, "POST", f"/collections/{name}/images", WRITE, files=files,
             data={"ids": json.dumps([doc_id])})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def _blob_files(home, name):
    folder = home / name / "blobs"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


DELETER = """
import json, sys, time
from engine import Engine
col = Engine(sys.argv[1]).open(sys.argv[2])
ids, deadline, n = json.loads(sys.argv[3]), time.monotonic() + float(sys.argv[4]), 0
while time.monotonic() < deadline:
    col.delete(ids)
    n += 1
print(n)
"""


def test_an_uploaded_image_goes_with_the_last_document_using_it(server, home, admin):
    col = admin.create("shared", encoder="fake-pixels", index="flat")
    red, blue, green = _png((250, 0, 0)), _png((0, 0, 250)), _png((0, 250, 0))
    _upload(server, "shared", red, "r1")
    b64 = {"images": [base64.b64encode(red).decode()], "ids": ["r2"]}
    assert http(server, "POST", "/collections/shared/add", WRITE, json=b64).json()["added"] == 1
    _upload(server, "shared", blue, "b")
    url_red, url_blue = (d.content for d in col.get(["r1", "b"]))
    assert len(_blob_files(home, "shared")) == 2
    # A hit's URL stays served while any document uses the file ...
    assert col.delete(["r1"]) == 1
    assert http(server, "GET", url_red, READ).content == red
    # ... a replacement (same id, other image) drops the old file at its commit ...
    assert _upload(server, "shared", green, "b")["updated"] == 1
    assert http(server, "GET", url_blue, READ).status_code == 404
    # ... and so does deleting the last user. A URL from an answer read before the delete
    # (an older generation) is then 404, as `get` of the id is empty: see docs/architecture.md.
    assert col.delete(["r2"]) == 1
    assert http(server, "GET", url_red, READ).status_code == 404
    assert _blob_files(home, "shared") == [col.get(["b"])[0].content.rsplit("/", 1)[1]]
    # An upload the add refuses as a whole leaves no file behind.
    r = http(server, "POST", "/collections/shared/images", WRITE,
             files=[("files", ("x.png", red, "image/png"))], data={"metadata": "[5]"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadInput"
    assert len(_blob_files(home, "shared")) == 1
    orphan = home / "shared" / "blobs" / ("e" * 64 + ".png")  # as a kill before the add left
    orphan.write_bytes(red)
    col.compact()
    assert not orphan.exists() and len(_blob_files(home, "shared")) == 1


def test_uploads_of_the_same_bytes_racing_deletes_keep_every_live_documents_file(
    server, home, admin
):
    """Two clients upload the same bytes under changing ids while another process deletes
    them all, over and over: no upload may lose its file, no live document be without one."""
    col = admin.create("race", encoder="fake-pixels", index="flat")
    red = _png((250, 0, 0))
    stop = threading.Event()
    ids = [f"d{i}" for i in range(6)]

    def uploader(k: int) -> int:
        n = 0
        while not stop.is_set():
            # The file must not vanish between the upload finding it and its add reading it.
            assert _upload(server, "race", red, ids[(k * 3 + n) % 6])["skipped"] == []
            n += 1
        return n

    deleter = subprocess.Popen(
        [sys.executable, "-c", DELETER, str(home), "race", json.dumps(ids), "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(uploader, 0), pool.submit(uploader, 1)]
        out, _ = deleter.communicate(timeout=120)
        stop.set()
        rounds = [j.result() for j in jobs] + [int(out)]
    assert min(rounds) > 0, rounds
    live = [d for d in col.get(ids) if d is not None]
    for doc in live:
        assert http(server, "GET", doc.content, READ).content == red
    assert len(_blob_files(home, "race")) == (1 if live else 0)
    col.delete(ids)
    assert _blob_files(home, "race") == []


def test_parallel_searches_while_one_client_writes(server, vecs):
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        col = RemoteEngine(server.url, api_key=WRITE).open("vecs")
        i = 0
        while not stop.is_set():
            col.add(vectors=vectors(20, seed=100 + i), ids=[f"p{i}-{j}" for j in range(20)])
            i += 1

    def read(seed: int) -> int:
        col = RemoteEngine(server.url, api_key=READ).open("vecs")
        for q in vectors(30, seed=seed):
            assert len(col.search(vector=q, k=5, where={"lang": "de"})) == 5
        return 30

    writer = threading.Thread(target=lambda: _catch(write, errors))
    writer.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(read, range(8))) == 240
    finally:
        stop.set()
        writer.join()
    assert not errors


def _catch(fn, errors):
    try:
        fn()
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_refusals_before_listening(tmp_path):
    def serve(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "--home", str(tmp_path), "serve", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = serve("--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 1 and "refusing to listen on 0.0.0.0 without --api-keys" in r.stderr
    keys = tmp_path / "keys.txt"
    keys.write_text("short read\n")
    r = serve("--api-keys", str(keys), "--port", "0")
    assert r.returncode == 1 and "line 1: the key is shorter than 16 characters" in r.stderr
    keys.write_text(f"{READ} read,root\n")
    r = serve("--api-keys", str(keys), "--port", "0")
    assert r.returncode == 1 and "unknown scope 'root'" in r.stderr


def test_write_lock_timeout_is_503_and_slow_reads_504(tmp_path):
    Engine(tmp_path).create("v", encoder="precomputed", index="flat", options={"dim": DIM})
    srv = ServerProcess(tmp_path, "--lock-timeout", "0.3", "--request-timeout", "0.000001")
    try:
        col = RemoteEngine(srv.url).open("v")
        held = Engine(tmp_path, lock_timeout=5).open("v")
        with held.writer.writing():  # another process is writing
            r = httpx.post(
                srv.url + "/collections/v/add", json={"vectors": [[1.0] * DIM], "ids": ["a"]}
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "CollectionLocked"
            with pytest.raises(CollectionLocked):
                col.add(vectors=vectors(1), ids=["a"])
        assert col.add(vectors=vectors(1), ids=["a"]).added == 1
        with pytest.raises(wire.Timeout):
            col.search(vector=vectors(1)[0], k=1)
        r = httpx.options(
            srv.url + "/collections",
            headers={"Origin": "https://desk.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in r.headers  # CORS off unless configured
    finally:
        srv.stop()


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    Engine(tmp_path).create("v", encoder="precomputed", index="flat", options={"dim": DIM})
    srv = ServerProcess(tmp_path, "--lock-timeout", "20")
    held = Engine(tmp_path).open("v")
    result = {}
    with held.writer.writing():
        t = threading.Thread(
            target=lambda: result.update(
                r=RemoteEngine(srv.url).open("v").add(vectors=vectors(3), ids=["a", "b", "c"])
            )
        )
        t.start()
        time.sleep(0.5)  # the add is waiting for the lock inside the server
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    t.join(30)
    assert result["r"].added == 3
    assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
    assert [d.id for d in Engine(tmp_path).open("v").get(["a", "b", "c"])] == ["a", "b", "c"]


def test_kill_9_loses_no_acknowledged_add(tmp_path):
    Engine(tmp_path).create("v", encoder="precomputed", index="auto", options={"dim": DIM})
    srv = ServerProcess(tmp_path, "--no-access-log")
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        col = RemoteEngine(srv.url).open("v")
        i = 0
        while not stop.is_set():
            ids = [f"b{i}-{j}" for j in range(25)]
            try:
                col.add(vectors=vectors(25, seed=i), ids=ids)
            except OSError:
                return  # the server died mid-request: this batch was never acknowledged
            acked.extend(ids)
            i += 1

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(2.0)
    srv.proc.kill()
    srv.proc.wait()
    stop.set()
    t.join(30)
    assert len(acked) >= 100
    found = Engine(tmp_path).open("v").get(acked)
    assert all(d is not None for d in found)
    assert Engine(tmp_path).open("v").count() >= len(acked)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    home = tmp_path / "home"
    Engine(home).create("v", encoder="precomputed", options={"dim": DIM})
    srv = ServerProcess(home, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), ca=str(cert))
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        remote = RemoteEngine(srv.url, ssl_context=srv.ssl)
        assert remote.list() == ["v"]
        with pytest.raises(OSError):  # an unverified certificate is refused by default
            RemoteEngine(srv.url).list()
        remote.close()  # an idle TLS keep-alive connection holds up shutdown until its timeout
    finally:
        srv.stop()


@pytest.mark.slow  # loads the multilingual model twice (test process and server): ~60 s
def test_concurrent_text_queries_share_encoder_calls_and_match_single_ones(tmp_path):
    """The real multilingual encoder: queries searched in one batch get the hits each gets
    alone, which are the embedded collection's (hybrid by default: it has a keyword index);
    a bad query in the batch gets its own error and fails none of its neighbours."""
    texts = [
        "How do I reset my PIN?",
        "Meine Karte wurde gestohlen",
        "carte bloquée au distributeur",
        "¿Cómo cambio mi dirección?",
        "我忘记了密码",
        "The app crashes when I log in",
        "Wie lange dauert eine Überweisung?",
        "Il mio conto è stato addebitato due volte",
    ]
    local = Engine(tmp_path).create("faq", encoder="use-multilingual", index="flat")
    local.add(texts=texts, ids=[f"q{i}" for i in range(len(texts))])
    srv = ServerProcess(tmp_path, "--batch-window-ms", "50", "--no-access-log")
    try:
        col = RemoteEngine(srv.url).open("faq")
        queries = ["PIN vergessen", "stolen card", "mot de passe", "transfer time"] * 4
        alone = [col.search(q, k=3) for q in queries[:4]]
        for q, hits in zip(queries, alone, strict=False):
            assert [h.id for h in hits] == [h.id for h in local.search(q, k=3)]
        vector_mode = col.search(queries[1], k=3, mode="vector")
        assert [h.id for h in vector_mode] == [
            h.id for h in local.search(queries[1], k=3, mode="vector")
        ]
        assert all(h.keyword_score is None for h in vector_mode)

        def metric(name):
            text = httpx.get(srv.url + "/metrics").text
            return int(next(x.split()[-1] for x in text.splitlines() if x.startswith(name)))

        def search(q):
            if q is None:  # joins the batch, fails in it (an alpha out of range)
                with pytest.raises(BadInput, match="alpha"):
                    col.search("stolen card", k=3, alpha=7.0)
                return None
            return col.search(q, k=3)

        calls = metric("hubsearch_query_encoder_calls_total")
        with ThreadPoolExecutor(18) as pool:
            together = list(pool.map(search, [*queries, None, None]))
        assert metric("hubsearch_query_encoder_calls_total") - calls < len(queries)
        for i, hits in enumerate(together[: len(queries)]):
            single = alone[i % 4]
            assert [h.id for h in hits] == [h.id for h in single]
            assert np.allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)
    finally:
        srv.stop()


def test_concurrent_vector_queries_are_batched_and_answer_as_alone(tmp_path):
    """Vector searches join the lanes too (one index call, one store fetch a batch): each gets
    the embedded answer, filtered or not, and a vector of the wrong size fails alone."""
    local = Engine(tmp_path).create("v", encoder="precomputed", index="flat", options={"dim": DIM})
    local.add(
        vectors=vectors(200), ids=[f"d{i}" for i in range(200)],
        metadata=[{"half": i % 2} for i in range(200)],
    )  # fmt: skip
    srv = ServerProcess(tmp_path, "--batch-window-ms", "50", "--no-access-log")
    try:
        col = RemoteEngine(srv.url).open("v")
        queries = vectors(12, seed=5)
        wheres = [None, {"half": 1}] * 6

        def search(i):
            if i is None:
                with pytest.raises(BadInput, match="expected shape"):
                    col.search(vector=np.ones(DIM + 1, np.float32), k=3)
                return None
            return col.search(vector=queries[i], k=4, where=wheres[i])

        with ThreadPoolExecutor(14) as pool:
            together = list(pool.map(search, [*range(12), None, None]))
        for i, hits in enumerate(together[:12]):
            assert hits == local.search(vector=queries[i], k=4, where=wheres[i])
    finally:
        srv.stop()


def test_reindex_and_compact_never_stop_searches(server, home):
    rng = np.random.default_rng(3)
    local = Engine(home).create("big", encoder="precomputed", index="flat", options={"dim": 64})
    local.add(vectors=rng.standard_normal((10_000, 64)), ids=[str(i) for i in range(10_000)])
    local.delete([str(i) for i in range(0, 10_000, 7)])
    col = RemoteEngine(server.url, api_key=ADMIN).open("big")
    for upkeep in (lambda: col.reindex("hnsw", {"M": 32}), col.compact):
        done = threading.Event()
        answered: list[float] = []

        def search(seed: int, done=done, answered=answered) -> None:
            reader = RemoteEngine(server.url, api_key=READ).open("big")
            q = np.random.default_rng(seed).standard_normal(64)
            while not done.is_set():
                assert len(reader.search(vector=q, k=10)) == 10
                answered.append(time.monotonic())

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(search, s) for s in range(3)]
            time.sleep(0.3)
            start = time.monotonic()
            upkeep()
            end = time.monotonic()
            done.set()
            for f in futures:
                f.result()
        during = [t for t in answered if start < t < end]
        assert len(during) >= 3, (len(during), end - start)
    assert col.count() == 10_000 - len(range(0, 10_000, 7))


def test_metrics_cover_every_worker(tmp_path):
    Engine(tmp_path).create("v", encoder="precomputed", options={"dim": DIM})
    srv = ServerProcess(tmp_path, "--workers", "2")
    try:
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(srv.url + "/collections/v/count").json() == {"count": 0}
        time.sleep(1.0)
        text = httpx.get(srv.url + "/metrics").text
        line = (
            'hubsearch_requests_total{route="/collections/{name}/count",method="GET",status="200"}'
        )
        assert f"{line} 30" in text
        pids = {rec["pid"] for rec in srv.access_log() if rec["path"] == "/collections/v/count"}
        assert len(pids) == 2
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)


def test_answers_do_not_wait_for_delayed_acks(server):
    """TCP_NODELAY on the served socket: without it every answer on a kept-alive connection
    waited ~40 ms for the client's delayed ACK (measured: 44 ms for /healthz)."""
    import http.client

    host, port = server.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    times = []
    for _ in range(20):
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        times.append(time.perf_counter() - start)
    conn.close()
    # The first answer is sent at once either way (the connection starts in quick-ACK mode).
    assert float(np.median(times[1:])) < 0.03, [round(t * 1000, 1) for t in times]
