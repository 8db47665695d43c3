"""`add_dataset` / `hubsearch add --ray` on a real local Ray cluster started by the test."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

from click.testing import CliRunner  # noqa: E402

from engine import Engine  # noqa: E402
from engine.cli import cli  # noqa: E402
from engine.errors import BadInput, SpaceMismatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BANKING = REPO.parent / "shared" / "data" / "banking77" / "test.csv"


@pytest.fixture(scope="module")
def cluster(fake_site, tmp_path_factory):
    """Two CPUs; encoder actors see faults the tests arm, and cannot read `driver-only/`."""
    faults = tmp_path_factory.mktemp("faults")
    driver_only = tmp_path_factory.mktemp("driver-only")
    env = {
        "HUBSEARCH_FAKE_FORBID": str(driver_only),
        "HUBSEARCH_FAKE_CRASH": str(faults / "crash"),
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield {"faults": faults, "driver_only": driver_only}
    ray.shutdown()


@pytest.fixture
def engine(tmp_path, registry):
    return Engine(tmp_path / "home", registry=registry, lock_timeout=10.0)


def tickets(n: int, start: int = 0) -> list[dict]:
    return [
        {"ticket": f"t{i}", "body": f"card problem {i} word{i % 13} other{i % 7}", "lang": "en"}
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def vectors_of(col, ids):
    """The stored exact vectors of ``ids``, in that order."""
    col.view.refresh()
    internal = np.array([d.internal_id for d in col.get(ids)], dtype=np.int64)
    return col.view.vectors.get(internal)


@pytest.mark.slow  # loads the real model on an actor and in process: ~90 s on 2 loaded cores
def test_same_documents_and_vectors_as_an_in_process_add(cluster, engine, tmp_path):
    """The real use-multilingual model on banking77 questions, encoded by one actor."""
    with BANKING.open() as f:
        rows = [
            {"qid": f"b{i}", "text": r["text"], "category": r["category"]}
            for i, r in enumerate(csv.DictReader(f))
            if i < 300
        ]
    path = write_parquet(tmp_path / "banking.parquet", rows, row_group_size=64)
    ray_col = engine.create("on-ray", encoder="use-multilingual", index="flat")
    report = ray_col.add_dataset(path, id="qid", actors=1, chunk=128)
    assert (report.added, report.encoded) == (300, 300)
    local = engine.create("in-process", encoder="use-multilingual", index="flat")
    local.add(
        texts=[r["text"] for r in rows],
        ids=[r["qid"] for r in rows],
        metadata=[{"category": r["category"]} for r in rows],
    )
    ids = [r["qid"] for r in rows]
    a, b = ray_col.get(ids), local.get(ids)
    assert [(d.content, d.metadata) for d in a] == [(d.content, d.metadata) for d in b]
    va, vb = vectors_of(ray_col, ids), vectors_of(local, ids)
    assert np.einsum("ij,ij->i", va, vb).min() >= 0.99999
    # hashed as an in-process add: adding the same rows in process again encodes nothing
    again = ray_col.add(
        texts=[r["text"] for r in rows],
        ids=ids,
        metadata=[{"category": r["category"]} for r in rows],
    )
    assert again.unchanged == 300


def test_encoder_files_are_shipped_to_actors_not_read_from_driver_paths(cluster, engine):
    folder = cluster["driver_only"] / "model"
    folder.mkdir()
    (folder / "salt.txt").write_text("pepper")
    col = engine.create("shipped", encoder="fake-folder", index="flat", options={"folder": folder})
    rows = tickets(200)
    path = write_jsonl(cluster["driver_only"] / "kb.jsonl", rows)
    report = col.add_dataset(path, text="body", id="ticket", actors=2, chunk=64)
    assert report.added == 200
    ids = [r["ticket"] for r in rows]
    expected = col.encoder.encode([r["body"] for r in rows], "text")
    assert np.einsum("ij,ij->i", vectors_of(col, ids), expected).min() >= 0.99999


def test_an_actor_with_other_weights_is_refused(cluster, engine, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "salt.txt").write_text("pepper")
    col = engine.create("space", encoder="fake-folder", index="flat", options={"folder": folder})
    (folder / "salt.txt").write_text("salt")  # the weights changed after the collection was made
    path = write_jsonl(tmp_path / "kb.jsonl", tickets(20))
    with pytest.raises(SpaceMismatch, match=r"encoder actor on .*differs in: salt") as info:
        col.add_dataset(path, text="body", id="ticket", actors=1)
    assert "\n" not in str(info.value)
    assert col.count() == 0


def test_a_killed_actor_leaves_no_duplicate_and_no_gap(cluster, engine, tmp_path):
    crash = cluster["faults"] / "crash"
    crash.write_text("3")  # the first actor to reach its 3rd batch dies; Ray restarts it
    rows = tickets(3000)
    path = write_parquet(tmp_path / "kb.parquet", rows, row_group_size=250)
    col = engine.create("crash", encoder="fake-hash", index="flat", options={"dim": 64})
    report = col.add_dataset(path, text="body", id="ticket", actors=2, chunk=500)
    assert not crash.exists() and crash.with_suffix(".fired").exists()  # it did die
    assert report.added == 3000 and col.count() == 3000
    ids = [r["ticket"] for r in rows]
    docs = col.get(ids)
    assert [d.content for d in docs] == [r["body"] for r in rows]
    internal = [d.internal_id for d in docs]
    assert len(set(internal)) == 3000  # one row each: nothing committed twice
    expected = col.encoder.encode([r["body"] for r in rows], "text")
    assert np.einsum("ij,ij->i", vectors_of(col, ids), expected).min() >= 0.99999


def test_a_distributed_add_runs_beside_other_writers_and_readers(cluster, engine, tmp_path):
    """Another thread adds and searches through the same handle while the cluster encodes."""
    import threading

    rows = tickets(2000)
    path = write_parquet(tmp_path / "kb.parquet", rows, row_group_size=200)
    col = engine.create("busy", encoder="fake-hash", index="flat", options={"dim": 64})
    done = threading.Event()
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            for i in range(20):
                col.add(
                    texts=[f"other note {i} {j}" for j in range(10)],
                    ids=[f"o{i}-{j}" for j in range(10)],
                )
                col.search("card problem", k=3)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=other_writer)
    thread.start()
    report = col.add_dataset(path, text="body", id="ticket", actors=1, chunk=200)
    thread.join(120)
    assert done.is_set() and not errors, errors
    assert report.added == 2000 and col.count() == 2200
    assert len({d.internal_id for d in col.get([r["ticket"] for r in rows])}) == 2000


DRIVER = """
import sys, ray
from engine import Engine
ray.init(address=sys.argv[1], runtime_env={"env_vars": {"HUBSEARCH_FAKE_SLOW": "0.3"}},
         log_to_driver=False)
col = Engine(sys.argv[2]).open("faq")
col.add_dataset(sys.argv[3], text="body", id="ticket", actors=1, chunk=100, batch_size=50)
print("finished")
"""


@pytest.mark.slow  # a second driver process joins the cluster: ~60 s on 2 loaded cores
def test_a_killed_driver_is_resumed_without_re_encoding_what_was_committed(
    cluster, engine, tmp_path
):
    # Actors get ~1,024 rows a call (6 s each here); 4 calls leave the test a window of ~18 s
    # to see the first commit and kill the driver, even on a loaded machine (with 2,000 rows
    # the driver, behind its actor, committed the second call right after the first).
    n = 4000
    rows = tickets(n)
    path = write_parquet(tmp_path / "kb.parquet", rows, row_group_size=100)
    col = engine.create("faq", encoder="fake-hash", index="flat", options={"dim": 64})
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, address, str(engine.home), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    try:
        while col.count() < 200 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].decode()
    committed = col.count()
    assert 200 <= committed < n, out[-2000:]
    report = col.add_dataset(path, text="body", id="ticket", actors=1, chunk=500)
    assert col.count() == n
    assert report.unchanged == committed and report.encoded == n - committed
    assert report.added == n - committed
    docs = col.get([r["ticket"] for r in rows])
    assert len({d.internal_id for d in docs}) == n


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ticket": "t7", "body": "dup"}, "kb.jsonl:41: duplicate id 't7' (first at kb.jsonl:8)"),
        ({"ticket": "x", "body": "  "}, "kb.jsonl:41: field 'body' is empty"),
        ({"ticket": "x", "text": "no body"}, "kb.jsonl:41: no 'body' field"),
    ],
)
def test_bad_rows_are_reported_with_their_position_before_anything_is_written(
    cluster, engine, tmp_path, bad, message
):
    path = write_jsonl(tmp_path / "kb.jsonl", [*tickets(40), bad])
    col = engine.create("bad", encoder="fake-hash", index="flat", options={"dim": 64})
    with pytest.raises(BadInput) as info:
        col.add_dataset(path, text="body", id="ticket")
    assert message in str(info.value)
    assert col.count() == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ticket": "t7", "body": "dup"}, "dataset:41: duplicate id 't7' (first at dataset:8)"),
        ({"ticket": "x", "body": ""}, "dataset:41: field 'body' is empty"),
        ({"body": "no id"}, "dataset:41: no 'ticket' field"),  # null in Arrow: not "None"
    ],
)
def test_bad_rows_of_a_ray_dataset_are_reported_by_row_number(
    cluster, engine, bad, message
):
    """A user's dataset has no FILE:LINE: its rows are numbered from 1 in messages."""
    data = ray.data.from_items([*tickets(40), {"lang": "en", **bad}, *tickets(10, 100)])
    col = engine.create("bad", encoder="fake-hash", index="flat", options={"dim": 64})
    with pytest.raises(BadInput) as info:
        col.add_dataset(data, text="body", id="ticket")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert col.count() == 0


def test_a_tuned_collection_gets_base_vectors_from_actors_and_its_head_here(
    cluster, engine, tmp_path
):
    """The head is the driver's: actors encode in the base space, the commit maps them."""
    from test_tune import desk, utterance

    col = desk(engine)
    assert col.tune(label_field="intent", seed=0).committed
    rng = random.Random(5)
    new = [{"ticket": f"new{i}", "body": utterance(3, rng), "intent": "intent3"} for i in range(5)]
    col.add_dataset(write_jsonl(tmp_path / "new.jsonl", new), text="body", id="ticket")
    hit = col.search(new[0]["body"], k=1)[0]
    assert hit.id == "new0" and hit.similarity == pytest.approx(1.0, abs=1e-5)
    base = col.encoder.encode([r["body"] for r in new], "text")
    stored = vectors_of(col, [r["ticket"] for r in new])  # the base vectors, as in process
    assert np.einsum("ij,ij->i", stored, base).min() >= 0.99999


def test_cli_add_with_ray(cluster, tmp_path):
    home = tmp_path / "home"
    path = write_parquet(tmp_path / "kb.parquet", tickets(300), row_group_size=100)

    def run(*args):
        result = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "faq", "--encoder", "fake-hash", "-o", "dim=64")
    args = ["--id-field", "ticket", "--text-field", "body", "--meta-field", "lang"]
    out = run("add", "faq", str(path), *args, "--ray", "auto", "--actors", "2", "--json")
    assert json.loads(out)["added"] == 300
    got = json.loads(run("get", "faq", "t42", "--json"))
    assert got["metadata"] == {"lang": "en"} and got["content"].startswith("card problem 42 ")
    again = run("add", "faq", str(path), *args, "--ray", "auto", "--json")
    assert json.loads(again)["unchanged"] == 300


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Real photos in sub-folders, a note that is no image, and three images an add skips:
    undecodable, empty, and a 34-byte WebP declaring 16,000 x 16,000 (a decode bomb)."""
    from photos import real_photos, webp_header
    from PIL import Image

    folder = tmp_path_factory.mktemp("catalogue")
    photos = real_photos()
    good = {
        "shelf/coffee.jpg": photos["coffee"],
        "shelf/chelsea.jpg": photos["chelsea"],
        "shelf/deep/rocket.png": photos["rocket"][::2, ::2],
        "china.jpg": photos["china"][::2, ::2],
        "camera.gif": photos["camera"][::2, ::2],
    }
    for name, image in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
    bad = {
        "shelf/broken.jpg": b"\xff\xd8\xff\xe0 definitely not a jpeg",
        "empty.png": b"",
        "bomb.webp": webp_header(16_000, 16_000),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image: neither add takes it")
    return folder, sorted(good), sorted(bad)


def add_json(run, *args):
    return json.loads(run(*args, "--json").strip().splitlines()[-1])


@pytest.mark.slow  # the real EfficientNet on an actor and in process: ~60 s on 2 loaded cores
def test_an_image_folder_on_ray_is_added_as_hubsearch_add_adds_it(
    cluster, tmp_path, image_folder
):
    """Same ids, vectors and skipped images (by path, with the same reasons) as in process."""
    folder, good, bad = image_folder
    home = tmp_path / "home"

    def run(*args):
        result = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "on-ray", "--encoder", "efficientnet")
    run("create", "in-process", "--encoder", "efficientnet")
    on_ray = add_json(run, "add", "on-ray", str(folder), "--ray", "auto", "--actors", "1")
    local = add_json(run, "add", "in-process", str(folder))
    assert on_ray["added"] == local["added"] == len(good)
    skipped = {item["item"]: item["reason"] for item in on_ray["skipped_items"]}
    assert skipped == {item["item"]: item["reason"] for item in local["skipped_items"]}
    assert sorted(skipped) == sorted(str(folder / name) for name in bad)
    assert "MiB to decode" in skipped[str(folder / "bomb.webp")]
    assert "empty" in skipped[str(folder / "empty.png")]
    engine = Engine(home)
    ray_col, local_col = engine.open("on-ray"), engine.open("in-process")
    assert ray_col.count() == len(good)  # nothing written for the skipped images
    assert ray_col.get(bad) == [None] * len(bad)
    a, b = ray_col.get(good), local_col.get(good)  # ids: paths inside the folder
    assert [(d.content, d.metadata) for d in a] == [(d.content, d.metadata) for d in b]
    assert a[0].content == str(folder / good[0])
    va, vb = vectors_of(ray_col, good), vectors_of(local_col, good)
    assert np.einsum("ij,ij->i", va, vb).min() >= 0.99999
    # hashed as in process: an in-process add of the folder finds every image unchanged
    assert add_json(run, "add", "on-ray", str(folder))["unchanged"] == len(good)


def test_image_folder_with_a_sidecar_two_actors_and_a_re_run(cluster, engine, image_folder):
    """Sidecar metadata as `hubsearch add --sidecar` reads it; a re-run encodes nothing."""
    from PIL import Image

    folder, good, bad = image_folder
    sidecar = folder.parent / f"{folder.name}-meta.csv"
    sidecar.write_text("file,price\n" + "".join(f"{n},{i}\n" for i, n in enumerate(good)))
    col = engine.create("pixels", encoder="fake-pixels", index="flat")
    report = col.add_dataset(folder, actors=2, sidecar=sidecar)
    assert (report.added, report.encoded) == (len(good), len(good))
    assert sorted(item for item, _ in report.skipped) == sorted(str(folder / n) for n in bad)
    docs = col.get(good)
    assert [d.metadata for d in docs] == [{"price": i} for i in range(len(good))]
    expected = col.encoder.encode(
        [np.asarray(Image.open(folder / n).convert("RGB")) for n in good], "image"
    )
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", vectors_of(col, good), expected).min() >= 0.99999
    again = col.add_dataset(folder, actors=1, sidecar=sidecar)
    assert (again.unchanged, again.encoded, again.added) == (len(good), 0, 0)
    assert len(again.skipped) == len(bad)  # still reported: they are still not images


def test_cli_without_ray_says_what_to_install(tmp_path, fake_site, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    home = tmp_path / "home"
    runner = CliRunner()
    runner.invoke(cli, ["--home", str(home), "create", "faq", "--encoder", "fake-hash"])
    path = write_jsonl(tmp_path / "kb.jsonl", tickets(3))
    result = runner.invoke(cli, ["--home", str(home), "add", "faq", str(path), "--ray"])
    assert result.exit_code != 0
    assert "pip install 'hubsearch[ray]'" in result.output
    assert "Traceback" not in result.output
