"""Stored images (``<collection>/blobs/``) live exactly as long as some document uses them.

Embedded collections here (the lifetime rules are the engine's); the HTTP path is in
test_serve.py. `fake-pixels` encodes an image as its mean colours: the files' lifetime, not the
encoder, is under test.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("PIL")

from engine.blobs import BLOBS, store_blob
from engine.serve.blobs import add_uploads


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, "PNG")
    return buf.getvalue()


RED, BLUE = png((250, 0, 0)), png((0, 0, 250))


@pytest.fixture
def pics(engine):
    return engine.create("pics", encoder="fake-pixels", index="flat")


def upload(col, data: bytes, doc_id: str) -> Path:
    paths, report = add_uploads(col, [(data, "png")], [doc_id], None, None)
    assert report.added + report.updated + report.unchanged == 1
    return Path(paths[0])


def files(col) -> set[str]:
    folder = col.folder / BLOBS
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def live_files_exist(col) -> bool:
    """Whether every live document's file is there; under the blob lock, so that a delete
    committed by another thread or process right after our read cannot remove one meanwhile."""
    with col.blobs.using():
        docs = [d for d in col.get([f"d{i}" for i in range(100)]) if d is not None]
        return all(os.path.exists(d.content) for d in docs)


def test_delete_removes_the_file_only_with_the_last_document_using_it(pics):
    red = upload(pics, RED, "a")
    assert upload(pics, RED, "b") == red and files(pics) == {red.name}  # one file, two rows
    blue = upload(pics, BLUE, "c")
    assert pics.delete(["a"]) == 1
    assert red.exists() and pics.get(["b"])[0].content == str(red)
    assert pics.delete(["b", "c"]) == 2
    assert not red.exists() and not blue.exists() and files(pics) == set()


def test_replacing_a_documents_image_removes_the_old_file(pics):
    red = upload(pics, RED, "a")
    blue = upload(pics, BLUE, "a")  # same id, other bytes: an upsert
    assert pics.get(["a"])[0].content == str(blue) and pics.count() == 1
    assert not red.exists() and blue.exists()
    assert upload(pics, BLUE, "a") == blue and blue.exists()  # unchanged: nothing retired


def test_embedded_images_outside_blobs_are_never_removed(pics, tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(RED)
    pics.add(images=[mine], ids=["m"])
    pics.add(images=[tmp_path / "mine.png"], ids=["m"], metadata=[{"v": 2}])  # replaced
    pics.delete(["m"])
    pics.compact()
    assert mine.read_bytes() == RED


def test_a_document_added_from_a_blob_path_keeps_the_file(pics):
    """An embedded caller adding a stored path (say a hit's content) uses the blob too."""
    red = upload(pics, RED, "a")
    pics.add(images=[str(red)], ids=["copy"])
    pics.delete(["a"])
    assert red.exists()
    pics.delete(["copy"])
    assert not red.exists()


def test_compact_removes_orphans_a_killed_write_left(pics):
    red = upload(pics, RED, "a")
    orphan = pics.folder / BLOBS / ("0" * 64 + ".png")  # as a kill after store, before add
    orphan.write_bytes(BLUE)
    temp = pics.folder / BLOBS / f".{orphan.name}.x1y2.tmp"  # a kill mid-write
    temp.write_bytes(b"half")
    pics.compact()
    assert red.exists() and not orphan.exists() and not temp.exists()


def test_verify_reports_orphans_and_repair_removes_them(engine, pics):
    red = upload(pics, RED, "a")
    orphan = pics.folder / BLOBS / ("f" * 64 + ".jpg")
    orphan.write_bytes(BLUE)
    problems = engine.verify("pics")
    assert len(problems) == 1 and "1 image files in blobs/ are used by no document" in problems[0]
    assert orphan.name in problems[0]
    actions = engine.repair("pics")
    assert any("removed 1 image files no document uses" in a for a in actions), actions
    assert not orphan.exists() and red.exists() and engine.verify("pics") == []


def test_verify_names_a_live_document_whose_file_is_gone(engine, pics):
    red = upload(pics, RED, "a")
    red.unlink()  # by hand: hubsearch itself never does this to a live document
    assert engine.verify("pics") == [f"the image file {red} of a live document is missing"]


def test_a_removal_waits_for_an_upload_holding_the_same_bytes(pics):
    """The race the lock exists for: the upload found the file (stored earlier by "a"), the
    delete of "a" commits before the upload's add does. The file must survive."""
    red = upload(pics, RED, "a")
    found = threading.Event()
    go_on = threading.Event()
    out: dict[str, object] = {}

    def slow_upload() -> None:
        with pics.blobs.using():  # as add_uploads holds it, with a pause where it hurts
            path = store_blob(pics.folder, RED, "png")  # found: "a" stored it
            found.set()
            go_on.wait(10)
            pics.add(images=[str(path)], ids=["b"])

    t = threading.Thread(target=slow_upload)
    t.start()
    assert found.wait(10)
    deleter = threading.Thread(target=lambda: out.setdefault("deleted", pics.delete(["a"])))
    deleter.start()
    time.sleep(0.3)
    assert deleter.is_alive(), "the delete's removal must wait for the upload's hold"
    go_on.set()
    t.join(10)
    deleter.join(10)
    assert out["deleted"] == 1 and red.exists() and pics.get(["b"])[0].content == str(red)
    assert pics.get(["a"]) == [None]


def test_a_removal_that_cannot_wait_leaves_an_orphan_not_a_failed_delete(engine, pics):
    red = upload(pics, RED, "a")
    pics.blobs.lock_timeout = 0.2
    hold = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with pics.blobs.using():
            hold.set()
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert hold.wait(10)
    try:
        assert pics.delete(["a"]) == 1  # committed; its file stays for now
        assert red.exists()
    finally:
        done.set()
        t.join(10)
    assert "used by no document" in engine.verify("pics")[0]
    pics.compact()
    assert not red.exists()


def test_uploads_racing_deletes_in_threads_never_lose_a_live_documents_file(pics):
    errors: list[BaseException] = []
    stop = threading.Event()

    def uploader(k: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                upload(pics, RED, f"d{(k * 7 + i) % 6}")
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def deleter() -> None:
        try:
            while not stop.is_set():
                pics.delete([f"d{i}" for i in range(6)])
                assert live_files_exist(pics)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=deleter))
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert live_files_exist(pics)
    pics.delete([f"d{i}" for i in range(6)])
    assert files(pics) == set()


DELETER = """
import sys, time
from engine import Engine
from engine.errors import CollectionLocked
col = Engine(sys.argv[1], lock_timeout=30).open("pics")
deadline = time.monotonic() + float(sys.argv[2])
rounds = 0
while time.monotonic() < deadline:
    col.delete(["d%d" % i for i in range(6)])
    rounds += 1
print(rounds)
"""


def test_uploads_racing_a_deleting_process_never_lose_a_live_documents_file(engine, pics):
    upload(pics, RED, "d0")
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", DELETER, str(engine.home), "4"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    i = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        upload(pics, RED, f"d{i % 6}")
        assert live_files_exist(pics)
        i += 1
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and int(out) > 0 and i > 0
    assert live_files_exist(pics)
    pics.delete([f"d{i}" for i in range(6)])
    assert files(pics) == set()


CHURN = """
import io, sys
from PIL import Image
from engine import Engine
from engine.serve.blobs import add_uploads

def png(i):
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (i * 40 % 256, 0, 0)).save(buf, "PNG")
    return buf.getvalue()

col = Engine(sys.argv[1], lock_timeout=30).open("pics")
i = 0
while True:  # uploads, replacements, shared bytes and deletes, until killed
    add_uploads(col, [(png(i % 5), "png")], ["d%d" % (i % 4)], None, None)
    if i % 3 == 2:
        col.delete(["d%d" % ((i + 1) % 4)])
    print(i, flush=True)
    i += 1
"""


def test_a_killed_writer_leaves_orphans_at_worst_never_a_document_without_its_file(engine, pics):
    rng = random.Random(5)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHURN, str(engine.home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(rng.randint(3, 25)):  # let it get some writes done, then kill it
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        proc.wait()
        col = engine.open("pics")
        assert live_files_exist(col)  # the writer's recovery has not even run yet
        col.close()
    engine.repair("pics")
    col = engine.open("pics")
    assert live_files_exist(col) and col.blobs.orphans() == []
    used = {os.path.basename(d.content) for d in col.get([f"d{i}" for i in range(4)]) if d}
    assert files(col) == used


def test_a_moved_collection_keeps_the_files_its_rows_name_by_the_old_path(pics, registry, tmp_path):
    """Rows keep the absolute path they were added with; a copy restored elsewhere must not
    read that as 'no row uses these files' (references are matched by blob name)."""
    from engine import Engine

    red = upload(pics, RED, "a")
    upload(pics, BLUE, "b")
    pics.close()
    shutil.copytree(pics.folder, tmp_path / "elsewhere" / "pics")
    elsewhere = Engine(tmp_path / "elsewhere", registry=registry)
    moved = elsewhere.open("pics")
    moved.compact()
    assert elsewhere.verify("pics") == [] and len(files(moved)) == 2
    moved.delete(["a"])  # its row names the old path: the copy's own file goes
    assert files(moved) == {os.path.basename(moved.get(["b"])[0].content)}
    assert red.exists()  # the original collection is another collection
