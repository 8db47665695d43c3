"""Keyword and hybrid search: segmentation in 16 languages, query syntax, fusion, consistency."""

from __future__ import annotations

import json
import random
import sqlite3
import threading

import numpy as np
import pytest

from engine.errors import BadInput
from engine.hybrid import fuse
from engine.keywords import filter_query, search_query, segment

# One short real sentence per language of use-multilingual, and a word of it a user would type
# (for scripts without spaces, a word of two or more characters inside the sentence).
SENTENCES = {
    "ar": ("نسيت كلمة المرور الخاصة بحسابي", "المرور"),
    "de": ("Meine Karte wurde vom Geldautomaten eingezogen", "Geldautomaten"),
    "en": ("My card was swallowed by the cash machine", "swallowed"),
    "es": ("¿Cómo puedo cambiar la dirección de envío?", "direccion"),
    "fr": ("Ma carte bancaire a été refusée au magasin", "refusée"),
    "it": ("Il bonifico non è ancora arrivato sul conto", "bonifico"),
    "ja": ("パスワードを忘れてしまいました", "パスワード"),
    "ko": ("비밀번호를 잊어버렸어요", "비밀번호"),
    "nl": ("Mijn betaling is twee keer afgeschreven", "afgeschreven"),
    "pl": ("Nie mogę zalogować się do aplikacji", "zalogowac"),
    "pt": ("Minha transferência ainda não chegou", "transferencia"),
    "ru": ("Я забыл пароль от приложения", "Пароль"),
    "th": ("ฉันลืมรหัสผ่านของฉัน", "รหัสผ่าน"),
    "tr": ("Kartım bankamatikte sıkıştı", "bankamatikte"),
    "zh-CN": ("我忘记了我的密码怎么办", "密码"),
    "zh-TW": ("我的信用卡被自動櫃員機吞了", "信用卡"),
}


@pytest.fixture
def col(engine):
    return engine.create("kb", encoder="fake-hash", index="flat", options={"dim": 64})


def add_kb(col, texts, ids=None, metadata=None):
    return col.add(texts=texts, ids=ids or [f"d{i}" for i in range(len(texts))], metadata=metadata)


def ids_of(hits):
    return [h.id for h in hits]


# -- segmentation and query building --------------------------------------------------------


def test_segment_keeps_identifiers_whole_and_in_parts():
    terms = segment(
        "Error ERR_CARD_502 on XR-2200, write to anna.kowalski@example.com or 3.14"
    ).split()
    for whole in ("err_card_502", "xr-2200", "anna.kowalski@example.com", "3.14"):
        assert whole in terms
    for part in ("card", "502", "xr", "2200", "xr2200", "example"):
        assert part in terms


def test_ascii_fast_path_segments_like_the_general_one():
    # Ingest segments ASCII texts on a faster path: it must index exactly the same terms.
    from engine.keywords import _units

    rng = random.Random(0)
    alphabet = "aZ09 _-.@+/#:,;()'\"\t\n!?=*"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(3000)]
    texts += ["--opt=1 /usr/bin/x.y_z ERR_CARD_502 a--b a.b. .x. -- - _ c++ 3.14 anna@ex.com"]
    for text in texts:
        main = [t for terms, _ in _units(text) for t in terms]
        extra = [t for _, more in _units(text) for t in more]
        assert segment(text) == " ".join(main + extra), text


def test_segment_folds_case_and_diacritics():
    assert segment("Ça Élève Straße ÅNGSTRÖM") == "ca eleve strasse angstrom"


def test_dense_scripts_become_bigrams_plus_single_characters():
    assert segment("密码错误").split() == ["密码", "码错", "错误", "密", "码", "错", "误"]
    assert search_query("密码") == '"密码"'
    assert filter_query("密码错误") == '"密码 码错 错误"'


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced',
        "a * b",
        "NEAR(x y)",
        "-card",
        "((card",
        "card)) OR",
        'say "hi" and "',
        "^card:*",
        "AND OR NOT",
        "{col}: x",
        "'",
        "\x00",
    ],
)
def test_hostile_query_syntax_never_raises(col, query):
    add_kb(col, ["card declined near the shop", "reset card pin"])
    hits = col.search(query, mode="keyword", k=5)
    assert all(h.keyword_score is not None for h in hits)
    col.search(query, k=5)  # hybrid
    col.search("card", where={"$text": query}, k=5)


# -- search modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_keyword_query_in_each_language(col, lang):
    others = [s for code, (s, _) in SENTENCES.items() if code != lang]
    sentence, word = SENTENCES[lang]
    add_kb(col, [sentence, *others], ids=[lang, *[f"o{i}" for i in range(len(others))]])
    hits = col.search(word, mode="keyword", k=3)
    assert ids_of(hits)[:1] == [lang], (word, ids_of(hits))
    assert col.search(word, where={"$text": word}, mode="vector", k=3)[0].id == lang


def test_identifier_beats_similar_wording(col):
    texts = [f"payment failed with error ERR_CARD_{n} when paying online" for n in range(500, 520)]
    add_kb(col, texts, ids=[f"e{n}" for n in range(500, 520)])
    for mode in ("keyword", "hybrid"):
        assert col.search("ERR_CARD_502 when paying online", mode=mode, k=1)[0].id == "e502"
    assert ids_of(col.search("card", where={"$text": "ERR_CARD_507"}, k=5)) == ["e507"]


def test_hits_carry_both_sides_scores(col):
    add_kb(col, ["reset the card pin", "XR-2200 printer jams", "weather is nice today"])
    hits = col.search("XR-2200 printer", k=3)
    top = hits[0]
    assert top.id == "d1" and top.similarity is not None and top.keyword_score is not None
    only_vector = [h for h in hits if h.keyword_score is None]
    assert only_vector and all(h.similarity is not None for h in only_vector)
    vec = col.search("XR-2200 printer", mode="vector", k=3)
    assert all(h.score == h.similarity and h.keyword_score is None for h in vec)
    kw = col.search("XR-2200 printer", mode="keyword", k=3)
    assert ids_of(kw) == ["d1"] and kw[0].similarity is None
    assert kw[0].score == kw[0].keyword_score > 0


def test_keyword_scores_keep_bm25_order_above_an_ideal_match(col):
    fillers = [f"unrelated filler text number {i}" for i in range(6)]
    add_kb(col, ["XR-2200 XR-2200", "XR-2200 manual", *fillers])
    hits = col.search("XR-2200", mode="keyword", k=2)
    assert ids_of(hits) == ["d0", "d1"]
    # both are shorter than average and score above an ideal match: they are not tied at a
    # cap of 1 (which lost their order when fused with the vector side)
    assert hits[0].keyword_score == 1.0 > hits[1].keyword_score > 0.5


def test_phrases_in_double_quotes(col):
    add_kb(col, ["the card was blocked", "blocked: the card"])
    assert ids_of(col.search('"card was blocked"', mode="keyword")) == ["d0"]
    assert set(ids_of(col.search("card blocked", mode="keyword"))) == {"d0", "d1"}


def test_k_hits_whenever_k_documents_match(col):
    add_kb(col, [f"document number {i} about topic {i % 3}" for i in range(30)])
    # keyword side finds 1, vector side supplies the rest
    hits = col.search("XR-2200 topic", k=20)
    assert len(hits) == 20 and len(set(ids_of(hits))) == 20
    assert len(col.search("nothing matches these words", k=50)) == 30
    assert col.search("zzz qqq", mode="keyword", k=5) == []


def test_filters_apply_to_both_sides(col):
    texts = [f"router model XR-{2200 + i} manual" for i in range(20)]
    meta = [{"lang": "de" if i % 2 else "en"} for i in range(20)]
    add_kb(col, texts, metadata=meta)
    for mode in ("keyword", "hybrid", "vector"):
        hits = col.search("router XR-2203 manual", k=5, where={"lang": "de"}, mode=mode)
        assert len(hits) == 5 and all(h.metadata["lang"] == "de" for h in hits)
        assert hits[0].id == "d3"
    both = {"$and": [{"lang": "en"}, {"$or": [{"$text": "XR-2204"}, {"$text": "XR-2206"}]}]}
    assert sorted(ids_of(col.search("manual", where=both, k=10))) == ["d4", "d6"]
    assert col.search("manual", where={"lang": "de", "$text": "XR-2204"}, k=10) == []


def test_modes_and_alpha_are_checked(col, engine):
    add_kb(col, ["one text"])
    with pytest.raises(BadInput, match="mode must be one of"):
        col.search("x", mode="bm25")
    with pytest.raises(BadInput, match="alpha"):
        col.search("x", alpha=1.5)
    with pytest.raises(BadInput, match="needs a text query"):
        col.search(vector=np.ones(64, np.float32), mode="keyword")
    with pytest.raises(BadInput, match="fusion"):
        col.search("x", fusion="max")


def test_alpha_leans_each_way(col):
    add_kb(col, ["alpha beta gamma delta", "XR-2200", "alpha beta gamma"])
    q = "alpha beta gamma XR-2200"
    assert col.search(q, alpha=0.0, k=1)[0].id == "d1"  # keywords only: the rare identifier
    assert col.search(q, alpha=1.0, k=3) and col.search(q, alpha=1.0, k=1)[0].id != "d1"


# -- fusion ---------------------------------------------------------------------------------


def arrays(ids, scores):
    return np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32)


@pytest.mark.parametrize("fusion", ["rrf", "score", "relative"])
def test_fusion_with_one_side_empty_keeps_the_other_order(fusion):
    vec = arrays([3, 1, 2], [0.9, 0.5, 0.1])
    out = fuse(vec, arrays([], []), 10, 0.5, fusion)
    assert out.ids.tolist() == [3, 1, 2]
    out = fuse(arrays([], []), vec, 2, 0.5, fusion)
    assert out.ids.tolist() == [3, 1]


@pytest.mark.parametrize("fusion", ["rrf", "relative"])
def test_fusion_ties_are_broken_the_same_way_every_time(fusion):
    # 1 is first by vectors, 2 first by keywords: equal fused scores at alpha 0.5
    out = fuse(arrays([1, 2], [0.9, 0.8]), arrays([2, 1], [5.0, 4.0]), 2, 0.5, fusion)
    assert out.scores[0] == pytest.approx(out.scores[1])
    assert out.ids.tolist() == [1, 2]  # the higher similarity wins the tie
    same = fuse(arrays([5, 4], [0.5, 0.5]), arrays([], []), 2, 0.5, fusion)
    # rrf keeps the side's rank order; equal normalised scores go to the lower id
    assert same.ids.tolist() == ([5, 4] if fusion == "rrf" else [4, 5])


def test_score_fusion_found_by_both_sides_wins():
    out = fuse(arrays([1, 2, 3], [0.9, 0.8, 0.1]), arrays([2, 4], [0.3, 0.1]), 4, 0.5, "score")
    assert out.ids.tolist()[0] == 2
    assert out.similarity[2] == pytest.approx(0.8) and out.keyword[2] == pytest.approx(0.3)
    assert 4 not in out.similarity


# -- defaults, old collections, other stores ------------------------------------------------


def test_new_text_collection_records_the_keyword_index(col, engine):
    assert engine.info("kb").keyword == {"version": 1}


def test_old_collection_searches_by_vector_until_reindex_keyword(engine):
    col = engine.create("old", encoder="fake-hash", index="flat", keyword=False)
    add_kb(col, ["card blocked XR-2200", "printer jams", "weather today"])
    before = col.search("XR-2200 printer", k=3)
    assert all(h.keyword_score is None and h.score == h.similarity for h in before)
    with pytest.raises(BadInput, match="reindex old --keyword"):
        col.search("XR-2200", mode="keyword")
    with pytest.raises(BadInput, match="reindex old --keyword"):
        col.search("x", where={"$text": "XR-2200"})
    m = col.build_keywords()
    assert m.keyword == {"version": 1} and m.history[-1]["event"] == "keyword-index"
    assert ids_of(col.search("XR-2200", mode="keyword")) == ["d0"]
    assert col.search("XR-2200 printer", k=3)[0].keyword_score is not None
    add_kb(col, ["XR-2200 again"], ids=["new"])  # later adds are indexed too
    assert set(ids_of(col.search("XR-2200", mode="keyword"))) == {"d0", "new"}


def test_manifest_without_keyword_field_opens_as_vector_only(engine):
    col = engine.create("legacy", encoder="fake-hash", index="flat")
    add_kb(col, ["card blocked"])
    path = col.folder / "manifest.json"
    data = json.loads(path.read_text())
    del data["keyword"]
    path.write_text(json.dumps(data))
    again = engine.open_with("legacy", col.encoder)
    assert again.manifest.keyword is None
    assert again.search("card", k=1)[0].keyword_score is None


def test_precomputed_collection_searches_its_texts_by_keyword(engine):
    col = engine.create("pre", encoder="precomputed", options={"dim": 4}, keyword=True)
    col.add(
        texts=["XR-2200 manual", "other"], vectors=np.eye(4, dtype=np.float32)[:2], ids=["a", "b"]
    )
    assert ids_of(col.search("xr-2200")) == ["a"]  # keyword mode: no text encoder


def test_vectors_only_collection_has_no_keyword_mode(engine):
    col = engine.create("vec", encoder="precomputed", options={"dim": 4})
    col.add(vectors=np.eye(4, dtype=np.float32), ids=list("abcd"))
    with pytest.raises(BadInput, match="no keyword index"):
        col.search("a", mode="keyword")


# -- consistency ----------------------------------------------------------------------------


def keyword_rows(col) -> set[int]:
    with sqlite3.connect(col.folder / "store.sqlite") as db:
        return {r[0] for r in db.execute("SELECT rowid FROM keywords")}


def physical_text_rows(col) -> set[int]:
    with sqlite3.connect(col.folder / "store.sqlite") as db:
        return {r[0] for r in db.execute("SELECT id FROM documents WHERE modality = 'text'")}


def test_upsert_delete_compact_keep_the_keyword_index_exact(col):
    add_kb(col, ["XR-2200 old text", "keep me", "delete me ERR_9"], ids=["u", "k", "d"])
    add_kb(col, ["XR-3300 new text"], ids=["u"])
    assert ids_of(col.search("XR-3300", mode="keyword")) == ["u"]
    assert col.search("old", mode="keyword") == []  # the old version is retired
    assert col.search("text", where={"$text": "XR-2200"}) == []
    col.delete(["d"])
    assert col.search("ERR_9", mode="keyword") == []
    assert keyword_rows(col) == physical_text_rows(col)
    col.compact()
    assert keyword_rows(col) == physical_text_rows(col)
    assert len(keyword_rows(col)) == 2


def test_keyword_search_skips_retired_best_matches_not_yet_purged(col):
    # 80 retired versions match best (three hits each) and stay in the index until a snapshot
    # purges them: more than the top-first query fetches, so the search must rank by the join.
    add_kb(col, ["zebra zebra zebra"] * 80, ids=[f"old{i}" for i in range(80)])
    add_kb(col, ["plain text"] * 80, ids=[f"old{i}" for i in range(80)])
    add_kb(col, [f"a zebra among {i} other words here" for i in range(5)])
    assert len(keyword_rows(col)) == 165  # the retired versions are still indexed
    assert sorted(ids_of(col.search("zebra", mode="keyword", k=3))) == ["d0", "d1", "d2"]
    assert sorted(ids_of(col.search("zebra", mode="keyword", k=10))) == [f"d{i}" for i in range(5)]


def test_rollback_removes_keyword_rows_of_an_uncommitted_write(col):
    add_kb(col, ["committed XR-1"], ids=["a"])
    m = col.manifest
    # A killed writer's rows: written to the store, never committed by a manifest.
    from engine.store import NewRow

    row = NewRow(m.next_id, "b", "text", "ghost XR-2", {}, "{}", "h")
    col.store.write(m.generation + 1, [row], [], keyword=True)
    assert col.search("ghost", mode="keyword") == []  # invisible at the committed generation
    add_kb(col, ["next"], ids=["c"])  # the next writer rolls back first
    assert keyword_rows(col) == physical_text_rows(col)
    assert col.search("ghost", mode="keyword") == []


def test_searches_from_threads_while_a_writer_adds(col):
    add_kb(col, [f"seed {i} XR-{i}" for i in range(50)], ids=[f"s{i}" for i in range(50)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for mode in ("keyword", "hybrid"):
                    hits = col.search("XR-7 seed", mode=mode, k=5)
                    assert hits[0].id == "s7", ids_of(hits)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for batch in range(10):
        add_kb(
            col, [f"more {batch} {i}" for i in range(20)], ids=[f"m{batch}-{i}" for i in range(20)]
        )
    col.delete([f"m0-{i}" for i in range(20)])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert keyword_rows(col) == physical_text_rows(col)


# -- command line ---------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, fake_site):
    from click.testing import CliRunner

    from engine.cli import cli

    home = tmp_path / "cli-home"

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, ["--home", str(home), *args], prog_name="hubsearch")
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


@pytest.fixture
def kb_file(tmp_path):
    path = tmp_path / "kb.jsonl"
    rows = [
        {"id": "err", "text": "payment refused with ERR_CARD_502", "lang": "en"},
        {"id": "xr", "text": "Der Drucker XR-2200 zieht kein Papier ein", "lang": "de"},
        {"id": "pin", "text": "how do I reset my card pin", "lang": "en"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_cli_search_modes_and_info(run, kb_file):
    run("create", "faq", "--encoder", "fake-hash", "-o", "dim=64")
    run("add", "faq", str(kb_file), "--meta-field", "lang")
    out = run("search", "faq", "ERR_CARD_502", "--mode", "keyword", "--json").output
    hits = [json.loads(line) for line in out.splitlines()]
    assert hits[0]["id"] == "err" and hits[0]["similarity"] is None
    out = run("search", "faq", "xr-2200 papier", "--alpha", "0.3", "--json", "-k", "3").output
    top = json.loads(out.splitlines()[0])
    assert top["id"] == "xr" and top["keyword_score"] > 0 and top["similarity"] is not None
    where = json.dumps({"$text": "XR-2200"})
    out = run("search", "faq", "card", "--where", where, "--mode", "vector", "--json").output
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["xr"]
    info = run("info", "faq").output
    assert "keyword index: 3 texts" in info
    assert json.loads(run("info", "faq", "--json").output)["keyword"]["rows"] == 3
    bad = run("search", "faq", "x", "--alpha", "2", ok=False)
    assert bad.exit_code == 2


def test_cli_reindex_keyword_for_a_collection_without_one(run, kb_file):
    run("create", "old", "--encoder", "fake-hash", "--no-keyword")
    run("add", "old", str(kb_file))
    assert "keyword index: none" in run("info", "old").output
    failed = run("search", "old", "ERR_CARD_502", "--mode", "keyword", ok=False)
    assert failed.exit_code != 0 and "reindex old --keyword" in failed.output
    out = run("reindex", "old", "--keyword").output
    assert "built the keyword index of 'old' (3 texts)" in out
    assert json.loads(run("info", "old", "--json").output)["index"]["kind"] == "auto"
    out = run("search", "old", "ERR_CARD_502", "--mode", "keyword").output
    assert "err" in out.splitlines()[0]


# -- the real encoder -----------------------------------------------------------------------


@pytest.mark.slow
def test_hybrid_with_use_multilingual_finds_the_error_code_and_keeps_meaning(engine):
    col = engine.create("desk", encoder="use-multilingual", index="flat")
    tickets = {
        f"t{code}": f"Payment declined with error ERR_CARD_{code} when paying online"
        for code in range(500, 510)
    }
    tickets["pwd"] = "我忘记了登录密码，怎么办？"
    tickets["limit"] = "Wie kann ich mein Ausgabenlimit erhöhen?"
    col.add(texts=list(tickets.values()), ids=list(tickets))
    # the code decides among near-identical sentences: by meaning they are a hair apart, with
    # the keyword side the right one leads clearly
    vector = col.search("ERR_CARD_507 when paying online", mode="vector", k=10)
    hybrid = col.search("ERR_CARD_507 when paying online", k=3)
    assert hybrid[0].id == "t507" and hybrid[0].keyword_score > 0.8
    assert hybrid[0].score - hybrid[1].score > 10 * (vector[0].score - vector[1].score)
    # meaning still wins across languages when the shared words are only common ones
    top = col.search("Ich habe mein Passwort vergessen", k=2)
    assert top[0].id == "pwd" and top[0].keyword_score is None


def test_mixed_collection_indexes_only_its_texts(engine, tmp_path):
    col = engine.create("mixed", encoder="precomputed", options={"dim": 4}, keyword=True)
    eye = np.eye(4, dtype=np.float32)
    col.add(texts=["red XR-2200 shoe", "blue boot"], vectors=eye[:2], ids=["t1", "t2"])
    photo = tmp_path / "XR-2200.jpg"  # an image whose path holds the model number
    photo.write_bytes(b"not decoded: the vector is given")
    col.add(images=[photo], vectors=eye[2:3], ids=["p1"])
    assert keyword_rows(col) == physical_text_rows(col) and len(keyword_rows(col)) == 2
    assert ids_of(col.search("XR-2200", mode="keyword", k=5)) == ["t1"]
    assert ids_of(col.search(vector=eye[2], k=1, where={"$modality": "image"})) == ["p1"]


def test_search_many_searches_each_query_like_search(col):
    add_kb(col, ["XR-2200 printer jams", "reset the card pin", "ERR_9 on login"])
    queries = ["XR-2200", "card pin", "ERR_9 login"]
    for mode in ("keyword", "hybrid"):
        many = col.search_many(queries, k=2, mode=mode)
        assert [ids_of(h) for h in many] == [ids_of(col.search(q, k=2, mode=mode)) for q in queries]
    assert [h[0].id for h in col.search_many(queries, k=1)] == ["d0", "d1", "d2"]


def test_other_stores_refuse_keyword_search_in_one_line():
    from engine.keyword_store import require_sqlite

    with pytest.raises(BadInput, match="needs a SQLite store") as err:
        require_sqlite("postgresql")
    assert "\n" not in str(err.value)


def test_common_words_are_left_out_of_large_collections_matches():
    from engine.keyword_store import plan

    df = {"list": 3_000, "files": 1_500, "xr-2200": 2, "the": 9_000}
    query, ideal = plan([("list",), ("files",), ("xr-2200",)], df, 10_000)
    assert query == '"xr-2200"' and ideal > 0  # the common words still weigh in the ideal
    assert plan([("list",), ("the",)], df, 10_000)[0] == '"list"'  # only common: the rarest
    assert plan([("list",), ("xr-2200",)], df, 500)[0] == '"list" OR "xr-2200"'  # small: all
    # retired rows still indexed may make a count exceed the live total: no math error
    assert plan([("list",)], df, 500)[1] > 0
    assert plan([("nowhere",)], {}, 10_000)[0] is None
