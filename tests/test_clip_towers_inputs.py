"""clip-towers with towers it did not train, and the inputs it must refuse.

The "external" towers are a tiny CLIP-style pair exported by the test itself: the text tower
maps colour words to one-hot vectors, the image tower maps raw uint8 pixels to how much red,
green and blue stand out. Crude, but a real pair of SavedModels that share one space, enough to
check loading, preprocessing and cross-modal search without training anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engine.cli import cli
from engine.errors import BadInput
from plugins.clip_towers import ClipTowersEncoder
from plugins.clip_towers.cache import FeatureCache
from plugins.clip_towers.metrics import recall_at_k
from plugins.clip_towers.pairs import read_pairs
from plugins.clip_towers.spec import ImageInput, TowersSpec, write_spec

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
COLOURS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 40, 230)}


def save_text_tower(folder: Path) -> Path:
    import tensorflow as tf

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            lower = tf.strings.lower(texts)
            hits = [tf.cast(tf.strings.regex_full_match(lower, f".*{c}.*"), tf.float32)
                    for c in COLOURS]
            return tf.stack(hits, axis=1) + 0.01

    tower = Text()
    tf.saved_model.save(tower, str(folder),
                        signatures={"serving_default": tower.__call__.get_concrete_function()})
    return folder


def save_image_tower(folder: Path, width: int = 3) -> Path:
    import tensorflow as tf

    class Images(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8)])
        def __call__(self, images):
            mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0
            stand_out = tf.nn.relu(mean - tf.reduce_mean(mean, axis=1, keepdims=True)) + 0.01
            return tf.pad(stand_out, [[0, 0], [0, width - 3]])

    tower = Images()
    tf.saved_model.save(tower, str(folder),
                        signatures={"serving_default": tower.__call__.get_concrete_function()})
    return folder


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("external")
    towers = root / "towers"
    save_text_tower(towers / "text")
    save_image_tower(towers / "image")
    write_spec(towers, TowersSpec(dim=3, image=ImageInput(size=SIZE, dtype="uint8")))
    photos = root / "photos"
    photos.mkdir()
    for name, rgb in COLOURS.items():
        # Larger than the tower input and not square: the encoder must resize it.
        canvas = np.full((90, 60, 3), 128, dtype=np.uint8)
        canvas[10:80, 5:55] = rgb
        Image.fromarray(canvas).save(photos / f"{name}.png")
    return {"towers": towers, "photos": photos,
            "wide_image": save_image_tower(root / "image4", width=4)}


def test_external_uint8_towers_search_texts_and_images_in_one_collection(engine,
                                                                         external) -> None:
    col = engine.create("desk", encoder="clip-towers", options={"towers": str(external["towers"])})
    col.add(texts=["Red apples are sold out", "The green leaf logo", "Blue sky wallpaper"],
            ids=["faq-red", "faq-green", "faq-blue"])
    col.add(images=sorted(external["photos"].glob("*.png")), ids=["blue", "green", "red"])
    hits = col.search("my red thing", k=6)
    assert next(h for h in hits if h.modality == "image").id == "red"
    hits = col.search(image=external["photos"] / "blue.png", k=6)
    assert next(h for h in hits if h.modality == "text").id == "faq-blue"


def test_two_handles_describe_the_same_space_as_the_folder(external) -> None:
    folder = ClipTowersEncoder(towers=str(external["towers"]))
    handles = ClipTowersEncoder(text=str(external["towers"] / "text"),
                                image=str(external["towers"] / "image"),
                                image_input="uint8", image_size=SIZE)
    assert handles.dim == 3  # read from the saved signatures, nothing embedded to find it
    assert handles.fingerprint == folder.fingerprint
    image = external["photos"] / "green.png"
    np.testing.assert_allclose(handles.encode([image], "image"), folder.encode([image], "image"))
    other = ClipTowersEncoder(text=str(external["towers"] / "text"),
                              image=str(external["towers"] / "image"),
                              image_input="uint8", image_size=SIZE, resize="centre-crop")
    assert other.fingerprint != folder.fingerprint  # other preprocessing, other space


def test_towers_whose_widths_disagree_are_refused(external, tmp_path: Path) -> None:
    text, wide = str(external["towers"] / "text"), str(external["wide_image"])
    with pytest.raises(BadInput, match=r"text tower gives 3-d .* image tower gives 4-d"):
        _ = ClipTowersEncoder(text=text, image=wide, image_input="uint8", image_size=SIZE).dim

    declared = tmp_path / "declared"
    declared.mkdir()
    for sub in ("text", "image"):
        (declared / sub).symlink_to(external["towers"] / sub, target_is_directory=True)
    spec = TowersSpec(dim=3, image=ImageInput(size=SIZE, dtype="uint8")).to_json()
    spec["image"]["dim"] = 4
    (declared / "towers.json").write_text(json.dumps(spec))
    with pytest.raises(BadInput, match=r"towers\.json: the text tower gives 3-d"):
        ClipTowersEncoder(towers=str(declared))

    lying = tmp_path / "lying"
    lying.mkdir()
    (lying / "text").symlink_to(external["towers"] / "text", target_is_directory=True)
    (lying / "image").symlink_to(external["wide_image"], target_is_directory=True)
    write_spec(lying, TowersSpec(dim=3, image=ImageInput(size=SIZE, dtype="uint8")))
    with pytest.raises(BadInput, match="4-d"):
        ClipTowersEncoder(towers=str(lying)).encode(["red"], "text")


def test_options_that_conflict_or_drift_are_refused(external) -> None:
    towers = str(external["towers"])
    with pytest.raises(BadInput, match="'dim' does not go with 'towers'"):
        ClipTowersEncoder(towers=towers, dim=3)
    with pytest.raises(BadInput, match="both -o text=HANDLE and -o image=HANDLE"):
        ClipTowersEncoder(text=towers + "/text")
    with pytest.raises(BadInput, match="not pinned"):
        ClipTowersEncoder(text="https://tfhub.dev/some/text-tower",
                          image="https://tfhub.dev/some/image-tower/1")
    with pytest.raises(BadInput, match=r"towers\.json: missing"):
        ClipTowersEncoder(towers=towers + "/text")
    with pytest.raises(BadInput, match="image input must be one of"):
        ClipTowersEncoder(text=towers + "/text", image=towers + "/image", image_input="int8")


def test_construction_reads_only_the_json_and_imports_no_tensorflow(external) -> None:
    code = (
        "import sys; from plugins.clip_towers import ClipTowersEncoder as E; "
        f"e = E(towers={str(external['towers'])!r}); fp = e.fingerprint; "
        "assert e.dim == 3 and e.image_size == 32 and e.modalities == {'text', 'image'}; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(fp['model'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "clip-towers"


def test_too_few_usable_pairs_stop_with_one_clear_line(tmp_path: Path, external) -> None:
    lines = [{"image": f"photos/{c}.png", "text": f"something {c}"} for c in COLOURS] * 7
    lines += [{"image": f"photos/gone-{i}.png", "text": "lost"} for i in range(14)]
    pairs = external["photos"].parent / "few.jsonl"
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(cli, [
        "towers", "train", str(pairs), "--out", str(tmp_path / "t"), "--image-size", "64",
        "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ])
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error == ("Error: " + str(pairs) + ": only 21 usable pairs (14 skipped); training "
                     "needs at least 32 image-caption pairs")
    assert result.stderr.count("skipped few.jsonl:") == 14
    assert not (tmp_path / "t").exists()

    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"image": "x.png", "text": "t"}) + "\n")
    result = CliRunner().invoke(cli, ["towers", "train", str(short), "--out", str(tmp_path / "u")])
    assert result.exit_code == 1 and "only 1 usable pairs" in result.stderr


def test_malformed_pairs_lines_are_named_by_file_and_line(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "a.png", "text": "ok"}\n{"image": "b.png"}\n')
    with pytest.raises(BadInput, match=r"pairs.jsonl:2: field 'text' is missing"):
        read_pairs(pairs)
    pairs.write_text('{"picture": "a.png", "caption": "ok"}\n\n{oops\n')
    with pytest.raises(BadInput, match=r"pairs.jsonl:3: not valid JSON"):
        read_pairs(pairs, image_field="picture", text_field="caption")
    pairs.write_text('{"image": "sub/a.png", "text": "ok"}\n')
    pair = read_pairs(pairs)[0]  # paths are relative to the pairs file; group = caption
    assert pair.image == tmp_path.resolve() / "sub" / "a.png" and pair.group == "ok"


def test_recall_counts_any_candidate_sharing_the_query_group() -> None:
    queries = np.eye(3, dtype=np.float32)
    # Candidate 0 is the closest to every query; it shows groups 0 and 2, not 1.
    candidates = np.array([[1, 1, 1], [0, 0.5, 0], [0, 0, 0.5]], dtype=np.float32)
    groups = [frozenset({0}), frozenset({1}), frozenset({2})]
    recall = recall_at_k(queries, candidates, groups,
                         [frozenset({0, 2}), frozenset({1}), frozenset({2})], ks=(1, 2))
    assert recall == {1: 2 / 3, 2: 1.0}


def test_feature_cache_finds_rows_by_content_key_across_runs(tmp_path: Path) -> None:
    config = {"model": "m", "size": 96}
    first = FeatureCache(tmp_path, "lite0", config)
    first.add(["k1", "k2"], {"grid": np.array([[1.0], [2.0]], dtype=np.float16)})
    again = FeatureCache(tmp_path, "lite0", config)
    assert again.missing(["k2", "k3", "k1"]) == ["k3"]
    assert again.load(["k2", "k1"], "grid").ravel().tolist() == [2.0, 1.0]
    other = FeatureCache(tmp_path, "lite0", {**config, "size": 224})
    assert other.missing(["k1"]) == ["k1"]  # another backbone setting never shares rows
    assert not list(first.folder.glob(".shard-*"))  # no temporary files left


def test_mixed_precision_heads_train_and_give_float32() -> None:
    from plugins.clip_towers.fit import FitConfig, Split, Trainer
    from plugins.clip_towers.heads import build_heads, float32_copy

    rng = np.random.default_rng(0)
    n = 64
    groups = np.arange(n) % 8
    split = Split(
        grid=rng.normal(size=(n, 3, 3, 16)).astype(np.float16) + groups[:, None, None, None],
        trunk=None,
        text=rng.normal(size=(n, 12)).astype(np.float32) + groups[:, None],
        groups=groups.astype(np.int64),
        images=np.arange(n, dtype=np.int64),
    )
    heads = build_heads((3, 3, 16), 12, 8, mixed_precision=True)
    trainer = Trainer(heads, top=_NoTop(), config=FitConfig(epochs=2, batch_size=32),
                      progress=False, mixed_precision=True)
    result = trainer.fit(split, split)
    assert result.mixed_precision and len(result.history) == 2
    assert all(np.isfinite(r["loss"]) for r in result.history)
    grid = split.grid[:4].astype(np.float32)
    assert heads.image(grid).dtype.name == "float32"
    exported = float32_copy(heads)  # what a towers folder gets
    assert exported.image.layers[-2].compute_dtype == "float32"
    np.testing.assert_allclose(exported.image(grid), heads.image(grid), rtol=0.02, atol=0.02)


class _NoTop:
    """Stage 1 never runs the image backbone; the trainer only snapshots it."""

    trainable = False

    def get_weights(self) -> list:
        return []

    def set_weights(self, weights: list) -> None:
        assert weights == []


@pytest.mark.parametrize("command", [[], ["train"], ["eval"]])
def test_towers_help_teaches_by_example(command: list[str]) -> None:
    result = CliRunner().invoke(cli, ["towers", *command, "--help"], prog_name="hubsearch")
    assert result.exit_code == 0 and result.output.startswith(
        "Usage: hubsearch towers" + "".join(f" {c}" for c in command))
    examples = [line.strip() for line in result.output.splitlines()
                if line.startswith("  hubsearch ")]
    assert examples and all(e.startswith("hubsearch towers") for e in examples)
