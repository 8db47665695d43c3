"""hubsearch's engine: collections pairing a vector index with a metadata store.

Import cost matters (``hubsearch --help`` must stay fast), so TensorFlow and FAISS are imported
only where a model or an index is first used.
"""

from engine.api import Engine
from engine.collection import AddReport, Collection, Hit
from engine.errors import (
    BadInput,
    CollectionExists,
    CollectionLocked,
    CollectionNotFound,
    CorruptCollection,
    HubsearchError,
    PluginLoadError,
    PluginNotFound,
    SpaceMismatch,
)
from engine.remote import RemoteCollection, RemoteEngine
from engine.store import Document

__all__ = [
    "AddReport",
    "BadInput",
    "Collection",
    "CollectionExists",
    "CollectionLocked",
    "CollectionNotFound",
    "CorruptCollection",
    "Document",
    "Engine",
    "Hit",
    "HubsearchError",
    "PluginLoadError",
    "PluginNotFound",
    "RemoteCollection",
    "RemoteEngine",
    "SpaceMismatch",
]
