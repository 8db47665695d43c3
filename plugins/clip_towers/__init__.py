"""Cross-modal search: a text tower and an image tower mapping into one space.

Modules: ``spec`` (the towers folder format), ``pixels`` (image preprocessing shared by
training and search), ``towers`` (loading and calling SavedModel towers), ``encoder`` (the
plugin class); training: ``pairs`` (reading PAIRS.jsonl), ``backbones`` (the frozen bundled
encoders), ``cache`` (features on disk), ``features`` (extracting them once), ``heads``,
``fit`` (InfoNCE training), ``export`` (writing a towers folder), ``train`` (the whole run),
``metrics`` and ``evaluate`` (recall@k). Importing this package does not import TensorFlow.
"""

from plugins.clip_towers.encoder import ClipTowersEncoder

__all__ = ["ClipTowersEncoder"]
