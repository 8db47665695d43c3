"""clip-towers trained end to end on the generated shapes set, then used through the engine.

One training run per module (about a minute on 2 CPU cores): 1,600 English pairs, two of them
with a missing or corrupt image, at 96 px with one fine-tuning epoch; held out: 300 other
images, captioned in English, German and Japanese.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapes
from click.testing import CliRunner

from engine.cli import cli
from engine.errors import SpaceMismatch

pytestmark = pytest.mark.slow

TRAIN_PAIRS = 1600
TEST_PAIRS = 300
SIZE = str(shapes.SIZE)


def run_cli(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    files = shapes.write_set(folder, TRAIN_PAIRS, seed=1, name="train")
    held = shapes.write_set(folder, TEST_PAIRS, seed=2, name="test")
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with files["en"].open("a", encoding="utf-8") as f:
        for image in ("images/missing.png", "images/broken.png"):
            f.write(json.dumps({"image": image, "text": "a red circle on the left",
                                "group": "red-circle-left"}) + "\n")
    return {"train": files["en"], **{f"test.{k}": v for k, v in held.items()},
            "cache": folder / "cache", "root": folder}


@pytest.fixture(scope="module")
def trained(dataset: dict[str, Path]) -> tuple[Path, dict, str]:
    out = dataset["root"] / "towers"
    stdout, stderr = run_cli(
        "towers", "train", str(dataset["train"]), "--out", str(out), "--group-field", "group",
        "--image-size", SIZE, "--epochs", "6", "--fine-tune-epochs", "1",
        "--cache-dir", str(dataset["cache"]), "--no-progress", "--json",
    )
    return out, json.loads(stdout.strip().splitlines()[-1]), stderr


@pytest.fixture(scope="module")
def encoder(trained):
    from plugins.clip_towers import ClipTowersEncoder

    return ClipTowersEncoder(towers=str(trained[0]))


def test_training_skips_missing_and_corrupt_images_and_says_why(trained) -> None:
    out, report, stderr = trained
    reasons = {Path(s["image"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"missing.png", "broken.png"}
    assert "cannot read" in reasons["missing.png"]
    assert "train.jsonl:1601" in stderr and "train.jsonl:1602" in stderr
    assert report["used"] == TRAIN_PAIRS and report["images_computed"] == TRAIN_PAIRS
    assert report["mixed_precision"] is False  # no GPU here: float32 heads
    assert {"heads", "fine-tune"} <= {h["stage"] for h in report["history"]}
    assert sorted(p.name for p in out.iterdir()) == ["image", "logs", "text", "towers.json"]
    assert list((out / "logs").glob("events.out.tfevents.*"))


def test_held_out_english_recall_at_1_is_at_least_0_8_both_ways(trained, dataset) -> None:
    stdout, _ = run_cli("towers", "eval", str(trained[0]), str(dataset["test.en"]),
                        "--group-field", "group", "--json")
    recall = json.loads(stdout)["recall"]
    assert recall["text_to_image"]["@1"] >= 0.8, recall
    assert recall["image_to_text"]["@1"] >= 0.8, recall
    assert recall["text_to_image"]["@10"] >= recall["text_to_image"]["@1"]


@pytest.mark.parametrize("language", ["de", "ja"])
def test_towers_trained_on_english_answer_german_and_japanese(encoder, dataset,
                                                              language: str) -> None:
    from plugins.clip_towers.evaluate import evaluate_towers

    report = evaluate_towers(encoder, dataset[f"test.{language}"], group_field="group")
    assert report.used == TEST_PAIRS
    assert report.recall["text_to_image"][1] >= 0.6, report.recall
    assert report.recall["image_to_text"][1] >= 0.6, report.recall


def test_exported_towers_work_with_hub_keras_layer_and_as_two_handles(trained, encoder,
                                                                       dataset) -> None:
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401 - the text tower tokenises in-graph

    from plugins.clip_towers import ClipTowersEncoder

    out = trained[0]
    image_path = sorted((dataset["root"] / "images").glob("test-*.png"))[0]
    ours = encoder.encode([image_path], "image")
    texts = ["a red circle on the left", "ein blaues Quadrat rechts"]
    layer_text = hub.KerasLayer(str(out / "text"))(tf.constant(texts)).numpy()
    np.testing.assert_allclose(layer_text, encoder.encode(texts, "text"), atol=1e-5)

    from PIL import Image

    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)[None] / 255.0
    layer_image = hub.KerasLayer(str(out / "image"))(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(layer_image, ours, atol=1e-5)

    handles = ClipTowersEncoder(text=str(out / "text"), image=str(out / "image"),
                                image_size=shapes.SIZE)
    assert handles.dim == encoder.dim
    assert handles.fingerprint == encoder.fingerprint  # same towers, same space
    np.testing.assert_allclose(handles.encode([image_path], "image"), ours, atol=1e-5)


def test_one_collection_holds_texts_and_images_and_each_finds_the_other(
    engine, trained, dataset
) -> None:
    col = engine.create("shop", encoder="clip-towers", options={"towers": str(trained[0])})
    every = [shapes.Scene(s, c, p) for s in shapes.SHAPES for c in shapes.COLOURS
             for p in shapes.POSITIONS]
    col.add(texts=[shapes.english(s, 0) for s in every], ids=[s.group for s in every])
    rows = [json.loads(line) for line in dataset["test.en"].read_text().splitlines()[:100]]
    paths = [dataset["root"] / r["image"] for r in rows]
    report = col.add(images=paths, ids=[f"photo-{i}" for i in range(len(rows))],
                     metadata=[{"group": r["group"]} for r in rows])
    assert report.added == len(rows)

    def first(hits, modality):
        return next(h for h in hits if h.modality == modality)

    asked = rows[:20]
    text_hits = [first(col.search(shapes.german(_scene(r["group"])), k=10), "image")
                 for r in asked]
    assert np.mean([h.metadata["group"] == r["group"]
                    for h, r in zip(text_hits, asked, strict=True)]) >= 0.8
    image_hits = [first(col.search(image=dataset["root"] / r["image"], k=20), "text")
                  for r in asked]
    assert np.mean([h.id == r["group"] for h, r in zip(image_hits, asked, strict=True)]) >= 0.8


def test_rerun_reads_cached_features_and_retrained_towers_are_another_space(
    engine, trained, dataset
) -> None:
    retrained = dataset["root"] / "towers-2"
    stdout, _ = run_cli(
        "towers", "train", str(dataset["train"]), "--out", str(retrained), "--image-size", SIZE,
        "--epochs", "1", "--seed", "1", "--cache-dir", str(dataset["cache"]), "--no-progress",
        "--json",
    )
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["images_cached"] == TRAIN_PAIRS and report["images_computed"] == 0

    engine.create("faq", encoder="clip-towers", options={"towers": str(trained[0])})
    with pytest.raises(SpaceMismatch):
        engine.open("faq", encoder_options={"towers": str(retrained)})
    from plugins.clip_towers import ClipTowersEncoder

    with pytest.raises(SpaceMismatch):
        engine.open_with("faq", ClipTowersEncoder(towers=str(retrained)))
    engine.open("faq").close()  # the towers it was built with still open it


def _scene(group: str) -> shapes.Scene:
    colour, shape, position = group.split("-")
    return shapes.Scene(shape, colour, position)
