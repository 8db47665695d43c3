"""Stage 2 (`tune --full`): unfreeze the top of the encoder with a small learning rate.

The encoder (a :class:`~engine.encoders.Trainable`) runs its frozen bottom once over every
document of the snapshot, with a progress bar: that pass is both the training data and most of
the re-encode the new space needs. Training then runs the top and the stage-1 head over those
cached features, so its epochs cost seconds even on a CPU; only the switch takes the write lock
(:func:`commit_full`), and documents added meanwhile are encoded through the tuned weights there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.commit import Change
from engine.encoders import TEXT, Trainable
from engine.errors import BadInput
from engine.maintenance import new_index
from engine.manifest import Manifest, indexable
from engine.tune.data import FETCH_CHUNK, Examples, Snapshot
from engine.tune.evaluate import evaluate
from engine.tune.head import Head, through
from engine.tune.space import TunedEncoder, save_weights, weights_sha256
from engine.tune.train import contrastive_step, run_epochs
from engine.vectors import VectorFile


@dataclass(frozen=True)
class FullConfig:
    #: Few epochs: the top starts from the base weights and the head from stage 1.
    epochs: int = 10
    batch_size: int = 256
    #: The encoder's own layers move ten times slower than the head: small steps keep what it
    #: learnt about the 16 languages the user's labels do not cover.
    top_learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    scale: float = 20.0
    patience: int = 3
    min_steps: int = 20


@dataclass
class State:
    weights: dict[str, np.ndarray]
    head: Head


class Features:
    """The frozen bottom as an ``encode``, for pair queries: features, not vectors."""

    def __init__(self, encoder: Trainable, name: str) -> None:
        self.encoder = encoder
        self.name = name
        self.modalities = frozenset({TEXT})
        self.batch_size = encoder.batch_size  # type: ignore[attr-defined]
        self.dim = 0

    def encode(self, texts: list[str], modality: str) -> np.ndarray:
        return self.encoder.frozen_features(texts)


def snapshot_features(
    encoder: Trainable, snap: Snapshot, progress: bool
) -> tuple[Snapshot, np.ndarray]:
    """The snapshot with frozen features in place of vectors (the long pass, with a bar)."""
    from tqdm.auto import tqdm

    bad = [e for e, t in zip(snap.external, snap.texts, strict=True) if t is None]
    if bad:
        raise BadInput(
            f"--full re-encodes every document as text, and collection "
            f"{snap.manifest.name!r} holds {len(bad)} that are not texts (images or vectors), "
            f"e.g. {bad[0]!r}; tune it without --full"
        )
    step = max(1, 4 * encoder.batch_size)  # type: ignore[attr-defined]
    parts = []
    with tqdm(
        total=len(snap.texts),
        desc="tune stage 2: encoding",
        unit="doc",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for s in range(0, len(snap.texts), step):
            chunk = [t or "" for t in snap.texts[s : s + step]]
            parts.append(encoder.frozen_features(chunk))
            bar.update(len(chunk))
    feats = np.concatenate(parts).astype(np.float32)
    return replace(snap, vectors=feats), feats


def in_space(ex: Examples, encode: Any) -> Examples:
    """``ex`` (features) as vectors through ``encode``."""
    return replace(
        ex,
        anchors=encode(ex.anchors),
        partners=None if ex.partners is None else encode(ex.partners),
        val_queries=encode(ex.val_queries),
        candidates=encode(ex.candidates),
    )


def train_full(
    encoder: Trainable,
    ex: Examples,
    head: Head,
    seed: int,
    config: FullConfig,
    progress: bool,
) -> tuple[State, list[dict[str, Any]]]:
    """The best (top weights, head) on validation, starting from the base top and ``head``."""
    import tensorflow as tf

    base = encoder.top_weights()
    top = {k: tf.Variable(v, name=f"tune_{k}") for k, v in base.items()}
    weight = tf.Variable(head.weight, name="tune_weight")
    bias = tf.Variable(head.bias, name="tune_bias")

    def current() -> State:
        return State(
            {k: v.numpy().copy() for k, v in top.items()},
            Head(weight.numpy().copy(), bias.numpy().copy()),
        )

    def restore(state: State) -> None:
        for k, v in top.items():
            v.assign(state.weights[k])
        weight.assign(state.head.weight)
        bias.assign(state.head.bias)

    def mapped(x: Any) -> Any:
        return tf.math.l2_normalize(tf.matmul(encoder.top(top, x), weight) + bias, axis=1)

    def score(state: State) -> float:
        figures = evaluate(state.head, in_space(ex, vectors_of(encoder, state.weights)), None)
        return figures["knn@1"] + 1e-3 * figures["mrr"] + 1e-4 * figures["margin"]

    step = contrastive_step(
        mapped,
        [
            (config.top_learning_rate, list(top.values())),
            (config.head_learning_rate, [weight, bias]),
        ],
        ex,
        config.scale,
    )
    return run_epochs(ex, step, current, restore, score, seed, config, progress, "tune stage 2")


def vectors_of(encoder: Trainable, weights: dict[str, np.ndarray]) -> Any:
    """features -> unit vectors through ``weights`` (NumPy in, NumPy out)."""
    tuned = TunedEncoder(encoder, weights, "")
    return tuned.from_features


def commit_full(
    col: Any,
    encoder: Trainable,
    state: State,
    snap: Snapshot,
    features: np.ndarray,
    record: dict[str, Any],
    event: dict[str, Any],
) -> Manifest:
    """Write the tuned log, weights and head, and switch spaces in one commit.

    The snapshot's vectors come from its cached features; only documents added since it was
    read are encoded under the lock (through the tuned weights), so a tune never holds the lock
    for the length of a re-encode.
    """
    sha = weights_sha256(state.weights)
    tuned = TunedEncoder(encoder, state.weights, sha)
    known = tuned.from_features(features)
    row_of = {int(i): r for r, i in enumerate(snap.ids.tolist())}
    with col.writer.writing() as m:
        live = indexable(col.store.live_ids(m.generation), m)
        extra = np.asarray([i for i in live.tolist() if i not in row_of], dtype=np.int64)
        added = _encode_added(col, tuned, extra, m)
        lookup = {**row_of, **{int(i): len(known) + r for r, i in enumerate(extra.tolist())}}
        every = np.concatenate([known, added]) if len(added) else known

        def fetch(ids: np.ndarray) -> np.ndarray:
            return every[[lookup[int(i)] for i in ids.tolist()]]

        # A new epoch number each time: a reader still on an older tuned generation keeps
        # reading its own files, never a newer tune's rows under the same name.
        epoch = int(time.time() * 1000)
        files = col.writer.tuned.write_epoch(epoch, live, fetch, m.next_id)
        weights = save_weights(col.folder, state.weights)
        name = state.head.save(col.folder)
        vectors = VectorFile(col.writer.tuned.folder, m.dim, files)
        index = new_index(
            col.registry,
            m.index["kind"],
            m.index.get("params", {}),
            through(vectors, state.head),
            live,
        )
        from dataclasses import asdict

        tune = {
            **record,
            "head": name,
            "sha256": state.head.sha256,
            "encoder": weights,
            "vectors": asdict(files),
        }
        return col.writer.commit(
            m, Change(index=index, tune=tune, event={**event, "count": m.count})
        )


def _encode_added(col: Any, tuned: TunedEncoder, ids: np.ndarray, m: Manifest) -> np.ndarray:
    if not len(ids):
        return np.zeros((0, m.dim), np.float32)
    docs: dict[int, Any] = {}
    for s in range(0, len(ids), FETCH_CHUNK):
        docs.update(col.store.fetch(ids[s : s + FETCH_CHUNK], m.generation))
    texts = []
    for i in ids.tolist():
        doc = docs[i]
        if doc.modality != TEXT:
            raise BadInput(
                f"document {doc.id!r} added during the tune is not a text; --full needs texts "
                f"only: nothing was committed"
            )
        texts.append(doc.content)
    return tuned.encode(texts, TEXT)
