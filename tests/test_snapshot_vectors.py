"""Vectors stored once (issue 16): graph snapshots leave out the vectors the exact-vector log holds.

A reader rebuilds the graph's storage from the log, through the log's checksums; search answers
are the same as before the reopen; snapshots that carry their vectors (earlier versions, tuned
collections, whose index space is not the log's) load as they are.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from handles import reopen

from engine.errors import CorruptCollection
from engine.manifest import VectorFiles, file_crc32
from engine.tune.head import Head
from engine.tune.run import commit_head
from engine.vectors import VectorFile, VectorWriter
from indexes._snapshot import open_snapshot
from indexes.testing import clustered

DIM = 256
N = 1500


def graph_collection(engine, kind: str):
    options = {"exact_max": 300} if kind == "auto" else {}
    col = engine.create(
        "g", encoder="precomputed", options={"dim": DIM}, index=kind, index_options=options
    )
    x = clustered(N + 200, DIM, seed=5, clusters=20, latent=16)
    col.add(
        vectors=x[:N],
        ids=[f"v{i}" for i in range(N)],
        metadata=[{"part": i % 5} for i in range(N)],
    )
    col.delete([f"v{i}" for i in range(0, N, 15)])  # masked graph nodes
    col.wait_for_recall()  # its background commit may change efSearch, and so the answers
    col.checkpoint()
    return col, x


def answers(col, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    out = []
    for q in queries:
        for where in (None, {"part": 3}):
            out.append([(h.id, round(h.score, 5)) for h in col.search(vector=q, k=10, where=where)])
    return out


def snapshot_of(col):
    m = col.manifest
    return col.folder / f"index-{m.snapshot_generation}.faiss"


def graph_section(col) -> dict:
    path = snapshot_of(col)
    kind = col.manifest.index["kind"]
    with open_snapshot(path, kind) as reader:
        sections = reader._sections
    return next(s for name, s in sections.items() if name.endswith("graph"))


@pytest.mark.parametrize("kind", ["hnsw", "auto"])
def test_a_graph_snapshot_holds_the_graph_and_a_reopen_answers_the_same(engine, kind):
    col, x = graph_collection(engine, kind)
    if kind == "auto":
        assert col.manifest.index["state"]["active"] == "hnsw"
    vector_bytes = N * DIM * 4
    assert graph_section(col)["storage"] == "skipped"
    # graph, ids and mask only: M=32 links a node cost about 300 bytes, its vector 1,024
    assert snapshot_of(col).stat().st_size < 0.4 * vector_bytes
    queries = x[N : N + 20] + 0.01
    before = answers(col, queries)
    assert answers(reopen(engine, "g"), queries) == before
    # rows committed after the snapshot are replayed on top of the attached storage
    col.add(vectors=x[N:], ids=[f"w{i}" for i in range(200)], metadata=[{"part": 3}] * 200)
    assert col.manifest.snapshot_generation is not None
    col.wait_for_recall()
    after = answers(col, queries)
    assert after != before and answers(reopen(engine, "g"), queries) == after
    assert engine.verify("g") == []


def test_a_snapshot_written_with_its_vectors_by_an_earlier_version_still_loads(engine):
    col, x = graph_collection(engine, "hnsw")
    queries = x[N : N + 20] + 0.01
    before = answers(col, queries)
    path = snapshot_of(col)
    col.view.load_index().save(path)  # the format every earlier version wrote
    manifest = col.folder / "manifest.json"
    data = json.loads(manifest.read_text())
    data["snapshot_crc32"] = file_crc32(path)
    manifest.write_text(json.dumps(data))
    assert "storage" not in graph_section(col)
    assert answers(reopen(engine, "g"), queries) == before
    assert engine.verify("g") == []


def test_a_tuned_graph_keeps_its_vectors_in_the_snapshot_and_an_untuned_one_drops_them(engine):
    """The log holds base vectors, a tuned graph head(vector): that second set stays stored.

    The head is committed the way `tune` commits one (training it is test_tune's business).
    """
    col, x = graph_collection(engine, "hnsw")
    rng = np.random.default_rng(4)
    head = Head(
        np.linalg.qr(rng.normal(size=(DIM, DIM)))[0].astype(np.float32), np.zeros(DIM, np.float32)
    )
    commit_head(col, head, {"label_field": "part"}, SimpleNamespace(mode="test"))
    assert col.manifest.tune and "storage" not in graph_section(col)
    queries = x[N : N + 20] + 0.01
    tuned = answers(col, queries)
    assert answers(reopen(engine, "g"), queries) == tuned
    col.untune()
    assert graph_section(col)["storage"] == "skipped"
    assert answers(reopen(engine, "g"), queries) == answers(col, queries) != tuned


def test_the_log_reads_a_graphs_storage_checked_in_any_order_without_mapping_it(tmp_path):
    dim = 128  # 8,192 rows a checksum chunk: 10,000 rows make a whole chunk and a short one
    x = clustered(10_000, dim, seed=2, clusters=10, latent=8)
    writer = VectorWriter(tmp_path, dim)
    files = writer.append(writer.append(VectorFiles(), x[:6000]), x[6000:])
    log = VectorFile(tmp_path, dim, files)
    rng = np.random.default_rng(0)
    for ids in (np.arange(10_000), rng.permutation(10_000)[:7000], np.arange(0, 10_000, 3)):
        out = np.empty((len(ids), dim), np.float32)
        log.read_into(ids, out)
        assert np.array_equal(out, x[ids])
    with open(tmp_path / "tail-0.f32", "r+b") as f:  # one byte of row 9,000 flipped
        f.seek(9000 * dim * 4 + 5)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x40]))
    fresh = VectorFile(tmp_path, dim, files)
    out = np.empty((8192, dim), np.float32)
    fresh.read_into(np.arange(8192), out)  # the intact chunk still reads
    with pytest.raises(CorruptCollection, match=r"tail-0\.f32 is damaged .*rows 8192-9999"):
        fresh.read_into(np.arange(10_000), np.empty((10_000, dim), np.float32))


def test_a_compacted_graph_collection_reopens_with_base_and_tail_vectors(engine):
    col, x = graph_collection(engine, "hnsw")
    col.delete([f"v{i}" for i in range(1, N, 3)])
    col.compact()  # the live vectors move to a sorted base; the graph is rebuilt over them
    col.add(vectors=x[N:], ids=[f"w{i}" for i in range(200)], metadata=[{"part": 3}] * 200)
    col.checkpoint()  # a snapshot over base and tail ids
    assert col.manifest.vectors.base_rows and col.manifest.vectors.tail_rows == 200
    assert graph_section(col)["storage"] == "skipped"
    queries = x[N : N + 20] + 0.01
    assert answers(reopen(engine, "g"), queries) == answers(col, queries)
    assert engine.verify("g") == []
