"""`hubsearch add` on Parquet exports: same rules as JSONL/CSV, read a row group at a time."""

from __future__ import annotations

import datetime
import json
import sys

import pytest


@pytest.fixture
def run(cli_run):
    cli_run("create", "faq", "--encoder", "fake-hash", "-o", "dim=64")
    return cli_run


def write_parquet(path, rows, row_group_size=None):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def docs(run, *ids):
    out = run("get", "faq", *ids, "--json").output.splitlines()
    return [json.loads(line) for line in out]


def test_parquet_rows_are_added_with_ids_text_and_metadata(run, tmp_path):
    rows = [
        {"ticket": f"t{i}", "body": f"card problem number {i}", "lang": "en", "n": i}
        for i in range(25)
    ]
    path = write_parquet(tmp_path / "kb.parquet", rows, row_group_size=4)
    args = ["--id-field", "ticket", "--text-field", "body", "--meta-field", "lang"]
    out = run("add", "faq", str(path), *args, "--json").output
    assert json.loads(out)["added"] == 25
    assert docs(run, "t7") == [
        {"id": "t7", "content": "card problem number 7", "metadata": {"lang": "en"}}
    ]
    # a second add of the same file changes nothing and encodes nothing
    assert json.loads(run("add", "faq", str(path), *args, "--json").output)["unchanged"] == 25


def test_parquet_ids_default_to_file_and_row(run, tmp_path):
    when = datetime.datetime(2024, 5, 1, 12, 30)
    rows = [{"text": "first ticket", "at": when}, {"text": "second ticket", "at": when}]
    path = write_parquet(tmp_path / "kb.parquet", rows)
    run("add", "faq", str(path))
    [doc] = docs(run, "kb.parquet:2")
    assert doc["content"] == "second ticket"
    assert doc["metadata"] == {"at": "2024-05-01T12:30:00"}  # a timestamp becomes ISO text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "   "}, "kb.parquet:30: field 'text' is empty"),
        ({"body": "no text column value"}, "kb.parquet:30: no 'text' field"),
        ({"text": "a dup", "id": "r3"}, "kb.parquet:30: duplicate id 'r3' (first at kb.parquet:3)"),
    ],
)
def test_a_bad_row_stops_the_add_before_anything_is_written(run, tmp_path, row, message):
    rows = [{"id": f"r{i}", "text": f"good row {i}", "body": None} for i in range(1, 30)]
    rows.append({"id": "r30", "body": None, **row})
    path = write_parquet(tmp_path / "kb.parquet", rows, row_group_size=5)
    result = run("add", "faq", str(path), ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert json.loads(run("info", "faq", "--json").output)["count"] == 0


def test_a_null_id_is_a_missing_id_not_the_text_none(run, tmp_path):
    rows = [{"ticket": f"t{i}", "text": f"row {i}"} for i in range(5)] + [{"text": "no id"}]
    path = write_parquet(tmp_path / "kb.parquet", rows)  # the last row's ticket is null
    result = run("add", "faq", str(path), "--id-field", "ticket", ok=False)
    assert "kb.parquet:6: no 'ticket' field" in result.output
    mixed = [{"id": "a", "text": "has an id"}, {"id": None, "text": "null id"}]
    run("add", "faq", str(write_parquet(tmp_path / "ids.parquet", mixed)))
    assert [d["id"] for d in docs(run, "a", "ids.parquet:2")] == ["a", "ids.parquet:2"]
    assert docs(run, "ids.parquet:2")[0]["metadata"] == {}  # no "id": null kept as metadata


def test_duplicates_across_files_are_refused(run, tmp_path):
    a = write_parquet(tmp_path / "a.parquet", [{"id": "x", "text": "one"}])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"id": "x", "text": "two"}) + "\n")
    result = run("add", "faq", str(a), str(b), ok=False)
    assert "b.jsonl:1: duplicate id 'x' (first at a.parquet:1)" in result.output


def test_without_pyarrow_the_add_says_what_to_install(run, tmp_path, monkeypatch):
    path = tmp_path / "kb.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = run("add", "faq", str(path), ok=False)
    assert result.exit_code != 0
    assert "pip install 'hubsearch[parquet]'" in result.output
    assert "Traceback" not in result.output


def test_duplicate_check_spills_to_disk_and_still_finds_duplicates():
    from engine.errors import BadInput
    from engine.ingest import IdSet, Row

    seen = IdSet(in_memory=10)
    for i in range(50):
        seen.add(Row(f"id{i}", "t", {}, f"f:{i}"))
    assert len(seen) == 50 and seen._db is not None
    with pytest.raises(BadInput, match=r"f:99: duplicate id 'id3' \(first at f:3\)"):
        seen.add(Row("id3", "t", {}, "f:99"))
    seen.close()


def test_the_core_imports_neither_ray_nor_pyarrow():
    import subprocess

    code = (
        "import sys, engine, engine.cli_data, engine.collection, engine.streamed; "
        "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
