"""`hubsearch tune`, `hubsearch answer` and `search --min-score` from the shell."""

from __future__ import annotations

import json
import random

import pytest
from test_tune import INTENTS, utterance


@pytest.fixture
def run(cli_run):
    return cli_run


@pytest.fixture
def desk(run, tmp_path):
    rng = random.Random(0)
    path = tmp_path / "desk.jsonl"
    rows = [
        {"id": f"d{i}", "text": utterance(i % INTENTS, rng), "intent": f"intent{i % INTENTS}"}
        for i in range(INTENTS * 24)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run("create", "faq", "--encoder", "fake-hash", "-o", "dim=256")
    run("add", "faq", str(path))
    return path


def test_tune_prints_a_before_after_table_and_answer_abstains(run, desk, tmp_path):
    out = run("search", "faq", "key1x0 filler2", "--min-score", "auto", ok=False)
    assert out.exit_code == 1 and "tune it" in out.output and len(out.output.splitlines()) == 1

    dry = run("tune", "faq", "--label-field", "intent", "--dry-run", "--no-progress")
    assert "kNN@1" in dry.output and "dry run" in dry.output
    negatives = tmp_path / "oos.txt"
    negatives.write_text("weather forecast tomorrow\nsing me a song\n")
    report = json.loads(
        run(
            "tune",
            "faq",
            "--label-field",
            "intent",
            "--negatives",
            str(negatives),
            "--seed",
            "2",
            "--json",
        ).output
    )
    assert report["committed"] and report["after"]["knn@1"] > report["before"]["knn@1"]
    assert report["seed"] == 2 and report["negatives"] == 2

    known = json.loads(desk.read_text().splitlines()[0])  # a stored question: surely in scope
    text, intent = [known["text"]], [known["intent"]]
    hits = [
        json.loads(line)
        for line in run(
            "search", "faq", text[0], "--min-score", "auto", "--json"
        ).output.splitlines()
    ]
    assert hits and all(h["similarity"] >= report["after"]["threshold"] for h in hits)
    assert run("answer", "faq", "weather forecast tomorrow").output.strip() == "no answer"
    got = json.loads(run("answer", "faq", text[0], "--json").output)
    assert got["metadata"]["intent"] == intent[0]
    info = json.loads(run("info", "faq", "--json").output)
    assert info["fingerprint"]["head"] == report["head"]

    assert "back to the base encoder" in run("tune", "faq", "--reset").output
    assert "not tuned" in run("tune", "faq", "--reset").output


def test_tune_from_a_pairs_file_and_its_bad_inputs(run, desk, tmp_path):
    rng = random.Random(3)
    log = tmp_path / "log.jsonl"
    log.write_text(
        "\n".join(
            json.dumps({"question": utterance(i % INTENTS, rng), "doc": f"d{i % 16}"})
            for i in range(40)
        )
    )
    out = run(
        "tune",
        "faq",
        "--pairs",
        str(log),
        "--query-field",
        "question",
        "--id-field",
        "doc",
        "--json",
    )
    assert json.loads(out.output)["mode"] == "pairs"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"query": "x y", "id": f"nope{i}"}) for i in range(12)))
    out = run("tune", "faq", "--pairs", str(bad), ok=False)
    assert out.exit_code == 1 and "12 document ids" in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = run("search", "faq", "x", "--min-score", "high", ok=False)
    assert "--min-score must be 'auto' or a number" in out.output


def test_full_and_export_refuse_an_encoder_that_cannot_train_in_one_line(run, desk, tmp_path):
    before = run("info", "faq", "--json").output
    out = run("tune", "faq", "--label-field", "intent", "--full", "--no-progress", ok=False)
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "cannot be fine-tuned" in out.output and "without --full" in out.output
    out = run("export-encoder", "--collection", "faq", str(tmp_path / "model"), ok=False)
    assert out.exit_code == 1 and "no TensorFlow text path" in out.output
    assert not (tmp_path / "model").exists()
    assert run("info", "faq", "--json").output == before  # nothing changed
