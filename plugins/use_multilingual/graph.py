"""USE multilingual v3 as one TensorFlow graph: strings in, unit vectors out.

This module imports TensorFlow at its top, so only code that is about to run the model imports it
(the encoder does so lazily on first encode).

Shape of the computation, for a batch of N texts holding T tokens in all (BOS and EOS included):

* tokens: in-graph C++ SentencePiece, the op the official TF Hub module uses (see tokenizer.py);
* token features: the uint8 embedding row of each token, dequantised after the gather, three CNN
  n-gram branches (orders 2, 3, 5; two window layers each with residuals) and a layer norm, giving
  1280 values per token;
* pooling: a per-sentence sum of token features, projected to 512 and scaled by 1/sqrt(length);
* a residual DNN, tanh and an L2 norm.

Tokens are processed as one flat ragged sequence (no padding to the longest text): a window slot
that would reach outside its own sentence reads a zero row instead, so n-gram windows never cross
sentence boundaries. The flat sequence is cut into chunks of ``chunk_tokens`` tokens inside a
``tf.while_loop``; each chunk also reads ``HALO`` tokens on either side (the reach of two stacked
windows), so a text split between chunks gets exactly the features it would get in one piece.
Memory is therefore bounded by the chunk size whatever the batch holds: a 1 MB text or a thousand
long ones run in the same few hundred megabytes, and vectors are exact, never truncated.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from plugins.use_multilingual.settings import PRECISIONS
from plugins.use_multilingual.tokenizer import make_tokenizer
from plugins.use_multilingual.weights import CNN_DIM, NUM_CHUNKS, ORDERS, UseWeights

#: Tokens of context each side of a chunk: two stacked windows reaching 2 tokens each way.
MAX_LEFT = max(left for _, left in ORDERS)
MAX_RIGHT = max(n - 1 - left for n, left in ORDERS)
HALO = 2 * max(MAX_LEFT, MAX_RIGHT)
FEATURES = 512 + len(ORDERS) * CNN_DIM


class UseGraph(tf.Module):
    """The network's variables plus the tf.functions that run it.

    Calling it (strings) and ``encode_ids`` (already tokenised ids, for tests against other
    forward passes) each trace once: their input signatures have an unknown batch size.
    ``precision="bfloat16"`` runs the token-level matrix products (~95 % of the work) in
    bfloat16; layer norms, pooling, the DNN and the output stay float32, which keeps vectors
    at cosine >= 0.99997 of float32 ones (bfloat16 there too cost an order of magnitude more).
    """

    def __init__(
        self,
        weights: UseWeights,
        spm_model: bytes,
        *,
        chunk_tokens: int = 4096,
        precision: str = "float32",
    ) -> None:
        super().__init__(name="use_multilingual_v3")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.chunk_tokens = int(chunk_tokens)
        self.precision = precision
        self.tokenizer = make_tokenizer(spm_model)
        mm = tf.bfloat16 if precision == "bfloat16" else tf.float32

        def const(a: np.ndarray, name: str, dtype: tf.DType = tf.float32) -> tf.Variable:
            return tf.Variable(tf.constant(a, dtype=dtype), trainable=False, name=name)

        self.table = const(weights.table, "token_table_uint8", tf.uint8)
        self.scale = const(weights.scale, "chunk_scale")
        self.lo = const(weights.lo, "chunk_offset")
        self.proj = const(weights.proj, "proj", mm)
        self.proj_b = const(weights.proj_b, "proj_b")
        self.ln_in_g = const(weights.ln_in_g, "ln_in_g")
        self.ln_in_b = const(weights.ln_in_b, "ln_in_b")
        self.w1 = [const(w, f"w1_{n}", mm) for w, (n, _) in zip(weights.w1, ORDERS, strict=True)]
        self.b1 = [const(b, f"b1_{n}") for b, (n, _) in zip(weights.b1, ORDERS, strict=True)]
        self.w2 = [const(w, f"w2_{n}", mm) for w, (n, _) in zip(weights.w2, ORDERS, strict=True)]
        self.b2 = [const(b, f"b2_{n}") for b, (n, _) in zip(weights.b2, ORDERS, strict=True)]
        # The output layer norm's scale and shift folded into the projection after pooling.
        cnn_w = weights.cnn_w.astype(np.float64)
        pool_w = weights.ln_g.astype(np.float64)[:, None] * cnn_w
        pool_b = weights.ln_b.astype(np.float64) @ cnn_w + weights.cnn_b
        self.pool_w = const(pool_w.astype(np.float32), "pool_w")
        self.pool_b = const(pool_b.astype(np.float32), "pool_b")
        dnn = ("d0", "d1", "p1", "d2", "p3", "d3")
        self.dnn = {k: const(getattr(weights, k), k) for k in dnn}
        self.eps = float(weights.eps)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def __call__(self, texts: tf.Tensor) -> tf.Tensor:
        """UTF-8 strings ``[N]`` -> float32 ``[N, 512]`` unit vectors."""
        tokens = self.tokenizer.tokenize(texts)
        return self._forward(tokens.flat_values, tokens.row_splits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def features(self, texts: tf.Tensor) -> tf.Tensor:
        """What the frozen bottom gives `tune --full`: ``[N, 1281]`` = pooled token features
        ``[N, 1280]`` scaled by 1/sqrt(length), then sqrt(length). :func:`top` finishes them."""
        tokens = self.tokenizer.tokenize(texts)
        sums, lengths = self._pooled(tokens.flat_values, tokens.row_splits)
        root = tf.sqrt(lengths)
        return tf.concat([sums / root, root], axis=1)

    def top_weights(self) -> dict[str, np.ndarray]:
        """The layers :func:`top` runs, as arrays: what `tune --full` trains."""
        out = {"pool_w": self.pool_w.numpy(), "pool_b": self.pool_b.numpy()}
        out.update({k: v.numpy() for k, v in self.dnn.items()})
        return out

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="ids"),
            tf.TensorSpec([None], tf.int64, name="row_splits"),
        ]
    )
    def encode_ids(self, ids: tf.Tensor, row_splits: tf.Tensor) -> tf.Tensor:
        """Token ids (BOS/EOS included) of N texts, flat, with ragged row splits -> ``[N, 512]``."""
        return self._forward(ids, row_splits)

    # -- the forward pass --------------------------------------------------------------------

    def _forward(self, ids: tf.Tensor, row_splits: tf.Tensor) -> tf.Tensor:
        sums, lengths = self._pooled(ids, row_splits)
        # sum_t LN(f_t) @ W + n b  ==  (sum_t norm(f_t)) @ (g W) + n (beta W + b): the layer
        # norm's scale and shift are applied once per text, folded into the pooled projection.
        pooled = self._mm(sums, self.pool_w) + lengths * self.pool_b
        return self._dnn(pooled * tf.math.rsqrt(lengths))

    def _pooled(self, ids: tf.Tensor, row_splits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-text sums of normalised token features ``[N, 1280]`` and lengths ``[N, 1]``."""
        splits = tf.cast(row_splits, tf.int32)
        n_texts = tf.shape(splits)[0] - 1
        total = tf.shape(ids)[0]
        text_of = tf.ragged.row_splits_to_segment_ids(splits)
        text_lo = tf.gather(splits, text_of)
        text_hi = tf.gather(splits, text_of + 1)
        size = self.chunk_tokens
        n_chunks = (total + size - 1) // size

        def chunk(c, sums_ta, rows_ta):
            a = c * size
            b = tf.minimum(a + size, total)
            ea = tf.maximum(a - HALO, 0)
            eb = tf.minimum(b + HALO, total)
            feats = self._token_features(
                ids[ea:eb],
                tf.maximum(text_lo[ea:eb] - ea, 0),
                tf.minimum(text_hi[ea:eb] - ea, eb - ea),
                a - ea,
                b - ea,
            )
            owner = text_of[a:b]
            sums = tf.math.segment_sum(feats, owner - owner[0])
            rows = owner[0] + tf.range(tf.shape(sums)[0])
            return c + 1, sums_ta.write(c, sums), rows_ta.write(c, rows)

        def one_step():
            # Everything fits one step (always so for queries): no loop, fewer ops to run.
            feats = self._token_features(ids, text_lo, text_hi, 0, total)
            return tf.math.segment_sum(feats, text_of)

        def steps():
            sums_ta = tf.TensorArray(
                tf.float32, size=n_chunks, infer_shape=False, element_shape=[None, FEATURES]
            )
            rows_ta = tf.TensorArray(
                tf.int32, size=n_chunks, infer_shape=False, element_shape=[None]
            )
            _, sums_ta, rows_ta = tf.while_loop(
                lambda c, *_: c < n_chunks,
                chunk,
                (tf.constant(0), sums_ta, rows_ta),
                parallel_iterations=1,
            )
            return tf.math.unsorted_segment_sum(sums_ta.concat(), rows_ta.concat(), n_texts)

        sums = tf.cond(n_chunks == 1, one_step, steps)
        lengths = tf.cast(splits[1:] - splits[:-1], tf.float32)[:, None]
        return sums, lengths

    def _token_features(self, ids, lo, hi, core_a, core_b):
        """Normalised (not yet scaled) features ``[core_b - core_a, 1280]`` of a chunk's core.

        The chunk is read with its halo; ``lo``/``hi`` bound each token's own text within it,
        and window slots outside read the zero row appended after the last token.
        """
        length = tf.shape(ids)[0]
        # Embedding, projection and first layer norm depend on the piece alone: compute them
        # once per distinct piece of the chunk (natural text repeats most of its pieces).
        pieces, piece_of = tf.unique(ids)
        chunk_of = pieces % NUM_CHUNKS
        emb = tf.cast(tf.gather(self.table, pieces), tf.float32)
        emb = emb * tf.gather(self.scale, chunk_of)[:, None] + tf.gather(self.lo, chunk_of)[:, None]
        x = self._dense(emb, self.proj, self.proj_b)
        x = tf.gather(self._normalise(x) * self.ln_in_g + self.ln_in_b, piece_of)
        emb = tf.gather(emb, piece_of[core_a:core_b])

        pos = tf.range(length)[:, None] + tf.range(-MAX_LEFT, MAX_RIGHT + 1)[None, :]
        inside = (pos >= lo[:, None]) & (pos < hi[:, None])
        slots = tf.where(inside, pos, length)
        core_slots = slots[core_a:core_b]
        zero = tf.zeros([1, CNN_DIM], tf.float32)

        def window(v, slots, n, left):
            rows = tf.gather(tf.concat([v, zero], axis=0), slots[:, MAX_LEFT - left :][:, :n])
            return tf.reshape(rows, [tf.shape(slots)[0], n * CNN_DIM])

        outs = [emb]
        for i, (n, left) in enumerate(ORDERS):
            xs = x[:, i * CNN_DIM : (i + 1) * CNN_DIM]
            h = tf.nn.relu(self._dense(window(xs, slots, n, left), self.w1[i], self.b1[i])) + xs
            # The second window layer is only needed on the core: the halo was context.
            out = tf.nn.relu(self._dense(window(h, core_slots, n, left), self.w2[i], self.b2[i]))
            outs.append(out + h[core_a:core_b])
        return self._normalise(tf.concat(outs, axis=1))

    def _dnn(self, pooled: tf.Tensor) -> tf.Tensor:
        return dnn(self.dnn, pooled, self.eps, self._mm)

    def _mm(self, x: tf.Tensor, w: tf.Variable) -> tf.Tensor:
        if w.dtype == tf.float32:
            return tf.matmul(x, w)
        return tf.cast(tf.matmul(tf.cast(x, w.dtype), w), tf.float32)

    def _dense(self, x: tf.Tensor, w: tf.Variable, b: tf.Variable) -> tf.Tensor:
        # bias_add (not +) lets Grappler fuse MatMul+BiasAdd(+Relu) into one oneDNN kernel.
        return tf.nn.bias_add(self._mm(x, w), b)

    def _normalise(self, x: tf.Tensor) -> tf.Tensor:
        """Layer norm without its scale and shift, over the last axis."""
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + self.eps)


def dnn(d, pooled, eps, mm=tf.matmul):
    """The residual DNN after pooling, over weights ``d`` (variables or tensors)."""
    y0 = tf.nn.relu(mm(pooled, d["d0"]))
    y1 = tf.nn.relu(mm(pooled, d["p1"]) + mm(y0, d["d1"]))
    y2 = tf.nn.relu(mm(y1, d["d2"]))
    z = tf.tanh(mm(y1, d["p3"]) + mm(y2, d["d3"]))
    norm2 = tf.reduce_sum(z * z, axis=1, keepdims=True)
    return z * tf.math.rsqrt(tf.maximum(norm2, eps))


def top(weights, features, eps=1e-8):
    """:meth:`UseGraph.features` -> unit vectors through ``weights`` (the pooled projection and
    the DNN): differentiable, so `tune --full` trains these layers on cached features."""
    feats, root = features[:, :-1], features[:, -1:]
    pooled = tf.matmul(feats, weights["pool_w"]) + root * weights["pool_b"]
    return dnn(weights, pooled, eps)
