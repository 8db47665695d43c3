"""The `use-multilingual` encoder as users meet it: options, fingerprints, bad input, huge input,
cross-lingual neighbours, and the SavedModel export read back as a TF Hub handle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BadInput
from engine.resources import file_sha256
from plugins.use_multilingual import UseMultilingualEncoder
from plugins.use_multilingual.weights import spm_path, weights_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder() -> UseMultilingualEncoder:
    return UseMultilingualEncoder()


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory) -> Path:
    return encoder.export(tmp_path_factory.mktemp("use") / "savedmodel")


def test_building_the_encoder_loads_neither_tensorflow_nor_weights():
    code = (
        "import sys\n"
        "from plugins.use_multilingual import UseMultilingualEncoder\n"
        "e = UseMultilingualEncoder(batch_size='64')\n"
        "assert e.dim == 512 and e.batch_size == 64 and e.fingerprint\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'plugins.use_multilingual.graph' not in sys.modules, 'model built'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_the_entry_point_names_this_class():
    from engine.registry import Registry

    assert Registry().encoder_class("use-multilingual") is UseMultilingualEncoder


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "blue"}, "unknown option 'colour'"),
        ({"source": "cloud"}, "must be bundled or hub"),
        ({"handle": "https://tfhub.dev/google/universal-sentence-encoder-multilingual"}, "/3"),
        ({"handle": "/no/such/folder"}, "no such SavedModel folder"),
        ({"source": "bundled", "handle": "https://tfhub.dev/x/1"}, "drop source=bundled"),
        ({"handle": "https://tfhub.dev/x/1", "precision": "bfloat16"}, "source=bundled only"),
        ({"precision": "float8"}, "float32, bfloat16"),
        ({"batch_size": "0"}, "at least 1"),
        ({"chunk_tokens": "8"}, "at least 64"),
    ],
)
def test_bad_options_are_refused_with_a_message_that_says_what_to_do(options, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        UseMultilingualEncoder(**options)


def test_fingerprint_records_model_weights_tokenizer_and_dim():
    fp = UseMultilingualEncoder().fingerprint
    assert fp["encoder"] == "use-multilingual" and fp["dim"] == 512
    assert fp["source"] == "bundled" and fp["model_version"] == 3
    assert fp["weights_sha256"] == file_sha256(weights_path())
    assert fp["spm_sha256"] == file_sha256(spm_path())
    assert fp["tokenizer"].startswith("sentencepiece-cpp")
    # Options that do not change vectors do not change the space.
    same = UseMultilingualEncoder(batch_size=8, chunk_tokens=128, precision="bfloat16")
    assert same.fingerprint == fp
    hub = UseMultilingualEncoder(
        handle="https://tfhub.dev/google/universal-sentence-encoder-multilingual/3"
    )
    assert hub.fingerprint != fp and hub.fingerprint["source"] == "hub"


def test_a_question_finds_its_answer_written_in_other_languages(encoder):
    answers = [
        "Die nächste Apotheke ist gleich um die Ecke neben der Post.",
        "電車は午前九時に東京駅を出発します。",
        "Il museo è chiuso il lunedì.",
        "Мы продаём свежий хлеб каждое утро.",
    ]
    questions = ["Where is the nearest pharmacy?", "¿A qué hora sale el tren?"]
    vectors = encoder.encode(answers + questions, "text")
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    best = (vectors[len(answers) :] @ vectors[: len(answers)].T).argmax(axis=1)
    assert best.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("items", "index"),
    [(["fine", 42], 1), ([None], 0), (["ok", "ok", b"\xff\xfe"], 2), (["a", "\ud800"], 1)],
)
def test_items_that_are_not_text_name_their_index(encoder, items, index):
    with pytest.raises(BadInput, match=f"text item {index}"):
        encoder.encode(items, "text")


def test_empty_and_whitespace_texts_still_encode_to_unit_vectors(encoder):
    # Ingestion refuses them; the encoder itself must not fail on them (queries, direct calls).
    vectors = encoder.encode(["", "   ", "\n\t"], "text")
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batches_of_any_size_reuse_one_traced_graph(encoder):
    graph = encoder.tf_module()
    for size in (1, 3, 17, 40):
        encoder.encode(["Bonjour tout le monde"] * size, "text")
    assert graph.__call__.experimental_get_tracing_count() == 1


def test_chunking_splits_texts_between_steps_without_changing_vectors(encoder):
    texts = ["短い文。", "A longer sentence, " * 40, "Kurz.", "😀" * 10 + " ok", "Ende " * 90]
    small_steps = UseMultilingualEncoder(chunk_tokens=64)
    gap = np.abs(small_steps.encode(texts, "text") - encoder.encode(texts, "text")).max()
    assert gap < 1e-5


def _peak_rss_growth_mb(encoder, run) -> float:
    """Peak resident memory of ``run`` above the level before it, model already loaded.

    Linux only: writing 5 to /proc/self/clear_refs resets the VmHWM high-water mark.
    """
    encoder.encode(["load the model before measuring"], "text")
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-memory mark")

    def field(name: str) -> int:
        return int(re.search(rf"{name}:\s+(\d+)", status.read_text()).group(1)) // 1024

    before = field("VmRSS")
    run()
    return field("VmHWM") - before


WORDS = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "by", "banks"]


def test_a_thousand_long_texts_encode_in_bounded_memory(encoder):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=100)) for _ in range(1000)]
    out = {}
    growth = _peak_rss_growth_mb(encoder, lambda: out.update(v=encoder.encode(texts, "text")))
    assert out["v"].shape == (1000, 512)
    # Without token-budget chunking this batch needs several GB.
    assert growth < 500, f"peak memory grew by {growth} MB"


@pytest.mark.slow
def test_a_megabyte_text_is_encoded_whole_in_bounded_memory(encoder):
    rng = np.random.default_rng(1)
    megabyte = " ".join(rng.choice(WORDS, size=250_000))[:1_000_000]
    out = {}
    growth = _peak_rss_growth_mb(encoder, lambda: out.update(v=encoder.encode([megabyte], "text")))
    assert out["v"].shape == (1, 512) and np.isfinite(out["v"]).all()
    assert growth < 500, f"peak memory grew by {growth} MB"


def test_export_reads_back_as_a_handle_with_the_same_vectors_and_its_own_fingerprint(
    encoder, exported
):
    texts = ["Where is my card?", "Wo ist meine Karte?", "カードはどこですか？", ""]
    loaded = UseMultilingualEncoder(handle=str(exported))
    assert np.abs(loaded.encode(texts, "text") - encoder.encode(texts, "text")).max() < 1e-6
    assert loaded.fingerprint != encoder.fingerprint
    assert loaded.fingerprint["source"] == "savedmodel"
    assert UseMultilingualEncoder(handle=str(exported)).fingerprint == loaded.fingerprint


_WITHOUT_HUBSEARCH = """
import json, sys

class NoHubsearch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("engine", "plugins", "indexes"):
            raise ImportError("hubsearch is not available here: " + name)

sys.meta_path.insert(0, NoHubsearch())
import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text  # registers the SentencePiece op, as for the official USE modules

folder, texts = sys.argv[1], tf.constant(json.loads(sys.argv[2]))
module = hub.load(folder)
serving = module.signatures["serving_default"]
out = {
    "hub.load": module(texts).numpy().tolist(),
    "KerasLayer": hub.KerasLayer(folder)(texts).numpy().tolist(),
    "serving_default": serving(inputs=texts)["outputs"].numpy().tolist(),
}
print(json.dumps(out))
"""


def test_export_loads_with_hub_load_and_keras_layer_without_hubsearch(encoder, exported, tmp_path):
    texts = ["Where is my card?", "¿Dónde está mi tarjeta?"]
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_HUBSEARCH, str(exported), json.dumps(texts)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = encoder.encode(texts, "text")
    for way, vectors in json.loads(done.stdout.splitlines()[-1]).items():
        assert np.abs(np.asarray(vectors) - expected).max() < 1e-6, way


def test_export_refuses_a_folder_with_files_and_a_hub_encoder(exported, tmp_path):
    with pytest.raises(BadInput, match="not empty"):
        UseMultilingualEncoder().export(exported)
    with pytest.raises(BadInput, match="source=bundled"):
        UseMultilingualEncoder(handle=str(exported)).export(tmp_path / "again")


def test_bfloat16_precision_stays_within_cosine_0_9999_of_float32(encoder):
    lines = (REPO / "tests/data/use/sentences.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    bf16 = UseMultilingualEncoder(precision="bfloat16").encode(texts, "text")
    cosines = np.einsum("ij,ij->i", bf16, encoder.encode(texts, "text"))
    assert cosines.min() >= 0.9999
