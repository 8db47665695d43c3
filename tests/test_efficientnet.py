"""The bundled EfficientNet-Lite0: converted right, and good enough to find a photo again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from photos import augment, distinct_images, jpeg_bytes, real_photos, write_grey_jpeg

from engine.errors import BadInput
from plugins.efficientnet import EfficientNetEncoder, preprocess

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = (REPO / "tests/data/imagenet_classes.txt").read_text().splitlines()
#: photo -> ImageNet classes (first synonym) any of which must be in its top 5.
EXPECTED = {
    "coffee": {"espresso", "cup"},
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "motorcycle": {"moped", "motor scooter"},
    "camera": {"tripod", "reflex camera"},
    "clock": {"wall clock", "analog clock"},
    "china": {"palace", "monastery", "pagoda"},
    "flower": {"daisy"},
}


@pytest.fixture(scope="module")
def encoder() -> EfficientNetEncoder:
    return EfficientNetEncoder()


@pytest.fixture(scope="module")
def classifier(encoder: EfficientNetEncoder):
    return encoder.source.load(include_top=True)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return real_photos()


def top5(classifier, image: np.ndarray) -> list[str]:
    x = preprocess.batch([image], 224).astype(np.float32)
    logits = np.asarray(classifier((x - 127.0) / 128.0, training=False))[0]
    return [CLASS_NAMES[i].split(",")[0] for i in np.argsort(-logits)[:5]]


def test_construction_is_cheap_and_imports_no_tensorflow() -> None:
    code = (
        "import sys; from plugins.efficientnet import EfficientNetEncoder as E; "
        "e = E(); fp = e.fingerprint; assert e.dim == 1280 and e.image_size == 224; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(fp['source'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "bundled"


def test_fingerprint_names_source_weights_preprocessing_and_width(encoder) -> None:
    from engine.resources import file_sha256

    fp = encoder.fingerprint
    assert fp["encoder"] == "efficientnet" and fp["dim"] == 1280 and fp["source"] == "bundled"
    assert fp["model"] == "efficientnet-lite0"
    assert fp["weights_sha256"] == file_sha256(encoder.source.weights_path())
    assert "(x - 127) / 128" in fp["preprocessing"] and "224" in fp["preprocessing"]
    assert EfficientNetEncoder(batch_size="8").fingerprint == fp  # batching is not the space


@pytest.mark.parametrize(
    "options, message",
    [
        ({"colour": "red"}, "unknown option 'colour'"),
        ({"source": "torch"}, "expected bundled, hub or keras"),
        ({"source": "keras:ResNet50"}, "keras:<one of"),
        ({"handle": "https://tfhub.dev/x/efficientnet/b0/feature-vector"}, "not pinned"),
        ({"source": "bundled", "weights": "imagenet"}, "does not apply"),
        ({"source": "hub"}, "needs -o handle"),
        ({"batch_size": "0"}, "positive"),
        ({"source": "keras:EfficientNetB0", "weights": "/no/such.h5"}, "not a file"),
        ({"handle": ".", "value_range": "0,2"}, "value_range"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options, message) -> None:
    with pytest.raises(BadInput, match=message):
        EfficientNetEncoder(**options).fingerprint  # noqa: B018 - some checks are lazy


def test_real_photos_get_the_right_imagenet_class_in_the_top_5(classifier, photos) -> None:
    misses = {}
    for name, expected in EXPECTED.items():
        found = top5(classifier, photos[name])
        if not expected & set(found):
            misses[name] = found
    assert not misses, f"expected classes not in top 5: {misses}"


def test_features_are_the_classifiers_pooled_layer(encoder, classifier, photos) -> None:
    import keras

    pooled = keras.Model(classifier.input, classifier.get_layer("avg_pooling").output)
    images = [photos["coffee"], photos["chelsea"]]
    x = (preprocess.batch(images, 224).astype(np.float32) - 127.0) / 128.0
    expected = np.array(pooled(x, training=False))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = encoder.encode(images, "image")
    assert got.shape == (2, 1280) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_batches_and_single_images_give_the_same_vectors(encoder, photos) -> None:
    images = list(photos.values())[:5] * 8  # 40 images: two model calls at batch 32
    together = encoder.encode(images, "image")
    alone = np.concatenate([encoder.encode([im], "image") for im in images[:5]])
    np.testing.assert_allclose(together[:5], alone, atol=1e-5)
    np.testing.assert_allclose(together[5:10], alone, atol=1e-5)


def test_paths_bytes_and_arrays_of_one_photo_agree(encoder, photos, tmp_path: Path) -> None:
    data = jpeg_bytes(photos["coffee"], quality=95)
    (tmp_path / "coffee.jpg").write_bytes(data)
    vectors = encoder.encode([tmp_path / "coffee.jpg", data, photos["coffee"]], "image")
    assert vectors[0] @ vectors[1] > 0.9999 and vectors[0] @ vectors[2] > 0.97


def test_augmented_copies_find_their_original_at_rank_1(encoder) -> None:
    rng = np.random.default_rng(20260)
    originals = distinct_images()
    names = list(originals)
    index = encoder.encode([originals[n] for n in names], "image")
    queries, truth = [], []
    for i, name in enumerate(names):
        for _ in range(2):
            queries.append(augment(originals[name], rng))
            truth.append(i)
    found = np.argmax(encoder.encode(queries, "image") @ index.T, axis=1)
    hits = found == np.array(truth)
    misses = [(names[t], names[f]) for t, f, ok in zip(truth, found, hits, strict=True) if not ok]
    assert len(names) >= 20
    assert hits.mean() >= 0.95, f"rank-1 {hits.mean():.1%} over {len(hits)}; misses {misses}"


def test_a_20000_pixel_photo_is_encoded(encoder, tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    write_grey_jpeg(huge, 20_000, 20_000)
    vector = encoder.encode([huge], "image")
    assert vector.shape == (1, 1280) and np.isfinite(vector).all()


def test_unreadable_files_are_bad_input_naming_the_item(encoder, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(BadInput, match="image item 1: not an image"):
        encoder.encode([jpeg_bytes(np.zeros((8, 8, 3), np.uint8)), text], "image")
    with pytest.raises(BadInput, match="does not encode text"):
        encoder.encode(["a cup of coffee"], "text")
