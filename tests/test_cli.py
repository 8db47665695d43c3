"""The `hubsearch` command line: verbs, --json output, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def run(cli_run):
    return cli_run


@pytest.fixture
def kb(tmp_path):
    path = tmp_path / "kb.jsonl"
    rows = [
        {"id": "pin", "text": "how do I reset my card pin", "lang": "en"},
        {"id": "lost", "text": "karte verloren was tun", "lang": "de"},
        {"id": "fee", "text": "why was I charged a fee", "lang": "en", "year": 2021},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def faq(run, kb):
    run("create", "faq", "--encoder", "fake-hash", "-o", "dim=256")
    run("add", "faq", str(kb))
    return kb


def test_add_then_search_prints_ranked_hits(run, faq):
    out = run("search", "faq", "reset pin", "-k", "2").output.splitlines()
    assert out[0].split()[2] == "pin" and len(out) == 2


def test_search_json_prints_one_object_per_hit(run, faq):
    lines = run("search", "faq", "fee", "--json", "--where", '{"lang": "en"}').output.splitlines()
    hits = [json.loads(line) for line in lines]
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["id"] == "fee" and hits[0]["metadata"] == {"lang": "en", "year": 2021}
    assert {h["metadata"]["lang"] for h in hits} == {"en"}


def test_add_summary_counts_added_updated_unchanged(run, faq, kb, tmp_path):
    summary = json.loads(run("add", "faq", str(kb), "--json").output)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (0, 0, 3)
    changed = tmp_path / "changed.jsonl"
    changed.write_text('{"id": "pin", "text": "new pin text"}\n{"id": "new", "text": "fresh"}\n')
    summary = json.loads(run("add", "faq", str(changed), "--json").output)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (1, 1, 0)


def test_csv_and_plain_text_readers(run, tmp_path):
    run("create", "t", "--encoder", "fake-hash")
    csv_file = tmp_path / "tickets.csv"
    csv_file.write_text("ticket,body,prio\nT1,printer on fire,3\nT2,cannot log in,1\n")
    run("add", "t", str(csv_file), "--id-field", "ticket", "--text-field", "body")
    txt = tmp_path / "notes.txt"
    txt.write_text("first note\n\nsecond note\n")
    run("add", "t", str(txt))
    hits = [json.loads(x) for x in run("search", "t", "printer", "--json").output.splitlines()]
    assert hits[0]["id"] == "T1" and hits[0]["metadata"] == {"prio": 3}
    ids = {
        json.loads(x)["id"]
        for x in run("search", "t", "note", "-k", "9", "--json").output.split("\n")
        if x
    }
    assert {"notes.txt:1", "notes.txt:3"} <= ids
    hits = run("search", "t", "x", "--where", '{"prio": {"$gte": 2}}', "--json").output
    assert [json.loads(x)["id"] for x in hits.splitlines()] == ["T1"]


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ('{"id": "a", "text": "   "}\n', [], "kb2.jsonl:1: field 'text' is empty"),
        ('{"id": "a", "text": "ok"}\n{not json\n', [], "kb2.jsonl:2: not valid JSON"),
        ('{"id": "a"}\n', [], "kb2.jsonl:1: no 'text' field"),
        ('{"text": "x"}\n', ["--id-field", "qid"], "kb2.jsonl:1: no 'qid' field"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', [], "duplicate id 'a'"),
    ],
)
def test_bad_rows_fail_with_one_line_and_store_nothing(run, faq, tmp_path, content, extra, message):
    bad = tmp_path / "kb2.jsonl"
    bad.write_text(content)
    result = run("add", "faq", str(bad), *extra, ok=False)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    info = json.loads(run("info", "faq", "--json").output)
    assert info["count"] == 3 and info["generation"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x", "--encoder", "nope"], "unknown encoder 'nope'"),
        (["create", "x", "--encoder", "fake-hash", "--index", "nope"], "unknown index kind 'nope'"),
        (["create", "x", "--encoder", "broken-encoder"], "failed to load"),
        (["create", "a/b", "--encoder", "fake-hash"], "is not allowed"),
        (["create", "..", "--encoder", "fake-hash"], "is not allowed"),
        (
            ["create", "x", "--encoder", "fake-hash", "-o", "colour=red"],
            "'colour' is known to neither",
        ),
        (["search", "faq", "pin", "--where", "{lang: en}"], "where: not valid JSON"),
        (
            ["search", "faq", "pin", "--where", '{"lang": {"$like": "e%"}}'],
            "unknown operator '$like'",
        ),
        (["search", "faq", "pin", "--where", '{"colour": "red"}'], "no document has the field"),
        (["search", "missing", "pin"], "no collection named 'missing'"),
        (["search", "faq", "   "], "query: text is empty"),
        (["search", "faq", "--image", "x.jpg"], "does not encode image"),
    ],
)
def test_usage_errors_are_one_line_and_non_zero(run, faq, args, message):
    result = run(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert json.loads(run("info", "faq", "--json").output)["count"] == 3


def test_delete_get_list_drop(run, faq):
    assert "deleted 1 of 2" in run("delete", "faq", "pin", "nope").output
    assert "pin: not found" in run("get", "faq", "pin").output
    assert json.loads(run("list", "--json").output) == {
        "name": "faq",
        "count": 2,
        "encoder": "fake-hash",
        "index": "auto",
    }
    run("drop", "faq", "--yes")
    assert run("list").output == ""


def test_plugins_lists_broken_plugin_and_keeps_the_others(run):
    rows = [json.loads(x) for x in run("plugins", "--json").output.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["broken-encoder"]["loads"] is False
    assert "hubsearch_fake_missing_module" in by_name["broken-encoder"]["error"]
    assert by_name["fake-hash"]["loads"] and by_name["fake-hash"]["entry_point"] == (
        "hubsearch_fake:HashEncoder"
    )
    assert by_name["flat"]["loads"] and by_name["precomputed"]["loads"]
    human = run("plugins").output
    assert "BROKEN" in human and "fake-hash" in human


@pytest.mark.parametrize(
    "command",
    [
        "plugins",
        "create",
        "add",
        "search",
        "delete",
        "get",
        "info",
        "list",
        "drop",
        "export-encoder",
        "reindex",
        "compact",
    ],
)
def test_every_command_help_teaches_by_example(run, command):
    out = run(command, "--help").output
    assert out.startswith(f"Usage: hubsearch {command}")
    examples = [line.strip() for line in out.splitlines() if line.startswith("  hubsearch ")]
    assert examples and all(e.startswith(f"hubsearch {command}") or "--home" in e for e in examples)


def test_console_script_exits_non_zero_with_one_line(tmp_path, fake_site):
    env = {**os.environ, "HUBSEARCH_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "search", "nope", "q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: no collection named 'nope' in {tmp_path}"


def test_reindex_and_compact_commands(run, faq):
    before = run("search", "faq", "reset pin", "--json").output
    assert "reindexed 'faq' as flat" in run("reindex", "faq", "--index", "flat").output
    run("delete", "faq", "lost")
    assert "compacted 'faq'" in run("compact", "faq").output
    after = [
        json.loads(x)["id"]
        for x in run("search", "faq", "reset pin", "--json").output.split("\n")
        if x
    ]
    assert after == [
        json.loads(x)["id"] for x in before.splitlines() if json.loads(x)["id"] != "lost"
    ]
    assert "unknown index kind 'nope'" in run("reindex", "faq", "--index", "nope", ok=False).output


def test_help_and_plugin_listing_do_not_import_tensorflow_or_faiss(fake_site):
    code = (
        "import sys; from click.testing import CliRunner; from engine.cli import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
        "print(sorted(m for m in ('tensorflow', 'faiss', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
