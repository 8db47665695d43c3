"""The other sources, with locally built models: the SavedModel export and keras.applications."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from photos import real_photos

from plugins.efficientnet import EfficientNetEncoder, preprocess
from plugins.efficientnet.sources import known_hub_model

# keras 3 saving weights trips numpy 2's copy-keyword deprecation once per variable.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    photos = real_photos()
    return [photos["coffee"], photos["chelsea"], photos["china"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, images) -> tuple[Path, np.ndarray]:
    """The bundled model exported as a SavedModel, and the bundled vectors of ``images``."""
    bundled = EfficientNetEncoder()
    folder = tmp_path_factory.mktemp("export") / "lite0"
    bundled.export(folder)
    return folder, bundled.encode(images, "image")


def test_export_is_a_savedmodel_that_tf_hub_loads_without_hubsearch(exported, images) -> None:
    import tensorflow_hub as hub

    folder, bundled = exported
    assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    layer = hub.KerasLayer(str(folder))
    x = preprocess.batch(images, 224).astype(np.float32) / 255.0  # the [0, 1] convention
    features = np.array(layer(x))
    assert features.shape == (3, 1280) and features.dtype == np.float32
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(features, bundled, atol=1e-5)


def test_a_local_savedmodel_handle_gives_the_bundled_space(exported, images) -> None:
    folder, bundled = exported
    encoder = EfficientNetEncoder(source="hub", handle=str(folder))
    assert encoder.image_size == 224 and encoder.dim == 1280  # width read from the signature
    fp = encoder.fingerprint
    assert fp["source"] == "savedmodel" and len(fp["savedmodel_sha256"]) == 64
    assert "(x - 0) / 255" in fp["preprocessing"]
    np.testing.assert_allclose(encoder.encode(images, "image"), bundled, atol=1e-5)
    assert EfficientNetEncoder(handle=str(folder), value_range="-1,1").fingerprint != fp


def test_well_known_hub_handles_know_their_input_size_and_width() -> None:
    v1 = "https://tfhub.dev/tensorflow/efficientnet/b3/feature-vector/1"
    kaggle = "https://www.kaggle.com/models/"
    assert known_hub_model(kaggle + "tensorflow/efficientnet/TensorFlow2/b7-feature-vector/1") == (
        600, 2560)
    assert known_hub_model(
        "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_s/feature_vector/2"
    ) == (384, 1280)
    assert known_hub_model(
        kaggle + "google/efficientnet-v2/TensorFlow2/imagenet1k-b2-feature-vector/2"
    ) == (260, 1408)
    assert known_hub_model("https://tfhub.dev/google/bit/m-r50x1/1") == (None, None)
    encoder = EfficientNetEncoder(handle=v1)  # nothing is downloaded until the first encode
    assert (encoder.image_size, encoder.dim) == (300, 1536)
    assert encoder.fingerprint["handle"] == v1


def test_keras_applications_model_with_a_local_weights_file(tmp_path: Path, images) -> None:
    import keras

    model = keras.applications.EfficientNetB0(weights=None)  # random weights, no download
    weights = tmp_path / "b0.weights.h5"
    model.save_weights(weights)
    encoder = EfficientNetEncoder(source="keras:EfficientNetB0", weights=str(weights))
    assert (encoder.dim, encoder.image_size) == (1280, 224)
    fp = encoder.fingerprint
    assert fp["source"] == "keras" and fp["model"] == "EfficientNetB0"
    assert len(fp["weights_sha256"]) == 64
    pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
    expected = np.array(pooled(preprocess.batch(images, 224).astype(np.float32)))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(images, "image"), expected, atol=1e-5)
