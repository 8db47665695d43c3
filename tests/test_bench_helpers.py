"""The benchmark helpers whose mistakes would silently skew published figures: the real
sentence set's language quota and prose filter, the routing of ``-o`` index options per kind,
and the reading of whatever recall an index records in ``hubsearch info --json``."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.append(str(BENCH))  # last: bench/engine.py must not shadow the package

from index_collections import info_entries, kind_options, measured, recall_fields  # noqa: E402
from real_corpus import quota  # noqa: E402
from text_sources import is_prose, split_sentences  # noqa: E402


def test_quota_is_the_largest_equal_cap_that_fits():
    sizes = [50_000, 40_000, 1_750, 1_500]
    cap = quota(sizes, 60_000)
    assert sum(min(s, cap) for s in sizes) <= 60_000
    assert sum(min(s, cap + 1) for s in sizes) > 60_000
    assert quota(sizes, 10**9) == 50_000  # room for everything: nothing is capped


def test_sentences_split_after_latin_and_cjk_full_stops():
    assert split_sentences("Erste Zeile.  Zweite\n Zeile! 第一句。第二句？") == [
        "Erste Zeile.",
        "Zweite Zeile!",
        "第一句。",
        "第二句？",
    ]


def test_prose_filter_keeps_sentences_and_drops_commands_and_fragments():
    assert is_prose("Cette option affiche la liste des fichiers du répertoire.", "fr")
    assert is_prose("ディレクトリの内容をリスト表示します。", "ja")  # counted in characters
    assert not is_prose("-g bytes | -groupsize bytes [-c cols] 0x1f 0x2f 0x3f", "en")
    assert not is_prose("File not found.", "en")  # fewer than four words


def test_index_options_go_to_every_kind_or_to_the_named_one():
    options = ["recall=0.98", "hnsw:efSearch=256", "auto:hnsw.M=48"]
    assert kind_options("hnsw", options) == {"recall": "0.98", "efSearch": "256"}
    assert kind_options("ivfpq", options) == {"recall": "0.98"}
    assert kind_options("auto", options) == {"recall": "0.98", "hnsw.M": "48"}


def test_a_top_level_recall_entry_is_read_and_waited_for():
    info = {
        "index": {"kind": "hnsw", "params": {}, "state": {"M": 32}},
        "recall": {"target": 0.95, "sample": 1000, "measured": None, "due": "built"},
        "history": [{"event": "recall", "recall": 0.9}],
    }
    assert not measured(info)
    assert dict(recall_fields(info_entries(info))) == {"recall.target": 0.95}
    info["recall"]["measured"] = {"recall": 0.962, "met": True, "params": {"efSearch": 96}}
    assert measured(info)
    assert dict(recall_fields(info_entries(info))) == {
        "recall.target": 0.95,
        "recall.measured.recall": 0.962,
        "recall.measured.met": True,
        "recall.measured.params.efSearch": 96,
    }
    assert measured({"index": {}, "recall": {"measured": None, "exact": True}})


def test_recall_fields_are_found_wherever_info_records_them():
    index = {
        "kind": "auto",
        "params": {"recall": 0.98},
        "state": {"active": "hnsw", "tuning": {"measured_recall": 0.981, "sample": 500}},
    }
    assert dict(recall_fields(index)) == {
        "params.recall": 0.98,
        "state.tuning.measured_recall": 0.981,
    }
