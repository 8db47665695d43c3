"""Options of the `use-multilingual` encoder, parsed once into a frozen value.

Options arrive as strings from the CLI (``-o handle=...``) or typed from Python; both go through
the shared ``option_*`` helpers so they behave the same. Parsing never touches TensorFlow or the
weights: opening a collection builds its encoder just to compare fingerprints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.encoders import option_int, option_str, reject_unknown_options
from engine.errors import BadInput
from plugins.hub import require_pinned

OWNER = "encoder 'use-multilingual'"
BUNDLED = "bundled"
HUB = "hub"
SOURCES = (BUNDLED, HUB)
PRECISIONS = ("float32", "bfloat16")
#: What `source=hub` loads when no handle is given (needs the network once, then TF Hub's cache).
DEFAULT_HANDLE = "https://tfhub.dev/google/universal-sentence-encoder-multilingual/3"
KNOWN = {"source", "handle", "batch_size", "chunk_tokens", "precision"}
#: Options that only mean something for our own graph.
BUNDLED_ONLY = ("chunk_tokens", "precision")
MIN_CHUNK_TOKENS = 64


@dataclass(frozen=True)
class UseSettings:
    source: str = BUNDLED
    handle: str | None = None
    batch_size: int = 256
    #: Tokens per step of the in-graph loop; None picks by device when the model loads.
    chunk_tokens: int | None = None
    precision: str = "float32"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> UseSettings:
        reject_unknown_options(options, KNOWN, OWNER)
        handle = option_str(options, "handle")
        source = option_str(options, "source", HUB if handle else BUNDLED)
        if source not in SOURCES:
            raise BadInput(f"{OWNER}: option 'source' must be bundled or hub, got {source!r}")
        if handle is not None and source != HUB:
            raise BadInput(f"{OWNER}: option 'handle' loads a TF Hub model; drop source={source}")
        if source == HUB:
            handle = handle if handle is not None else DEFAULT_HANDLE
            require_pinned(handle)
            given = [k for k in BUNDLED_ONLY if k in options]
            if given:
                raise BadInput(f"{OWNER}: option {given[0]!r} applies to source=bundled only")
        batch_size = option_int(options, "batch_size", cls.batch_size)
        if batch_size is None or batch_size < 1:
            raise BadInput(f"{OWNER}: option 'batch_size' must be at least 1, got {batch_size}")
        chunk_tokens = option_int(options, "chunk_tokens")
        if chunk_tokens is not None and chunk_tokens < MIN_CHUNK_TOKENS:
            raise BadInput(
                f"{OWNER}: option 'chunk_tokens' must be at least {MIN_CHUNK_TOKENS}, "
                f"got {chunk_tokens}"
            )
        precision = option_str(options, "precision", cls.precision)
        if precision not in PRECISIONS:
            raise BadInput(
                f"{OWNER}: option 'precision' must be one of {', '.join(PRECISIONS)}, "
                f"got {precision!r}"
            )
        return cls(source, handle, batch_size, chunk_tokens, precision)
