"""Optional GPU help for FAISS: used when a GPU build and a GPU are present, never required.

The part of the index kinds that gains most from a GPU is training (k-means over a sample for
`ivfpq`'s coarse centroids and its product quantiser), and it is also the part that needs no
GPU-side support for id selectors or removal. So this module hands out GPU flat indexes that
FAISS's k-means uses for its assignment step, and ``None`` whenever that is not possible (CPU
build of FAISS, no visible GPU, a GPU error), so callers simply carry on on the CPU.

The ``gpu`` option of an index reads ``auto`` (use one if present, the default), ``off``, or
``on`` (fail with a clear message when there is none).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from engine.errors import BadInput

log = logging.getLogger(__name__)
MODES = ("auto", "off", "on")


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with a CPU build of FAISS or when no GPU is visible."""
    import faiss

    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0
    except Exception:  # a broken CUDA setup must not break a CPU search
        log.warning("FAISS could not count GPUs; using the CPU", exc_info=True)
        return 0


def check_mode(mode: str | None, owner: str) -> str:
    mode = (mode or "auto").lower()
    if mode not in MODES:
        raise BadInput(f"{owner}: option 'gpu' is one of {', '.join(MODES)}, got {mode!r}")
    if mode == "on" and gpu_count() == 0:
        raise BadInput(
            f"{owner}: gpu=on but FAISS sees no GPU (install faiss-gpu and check the driver), "
            "or use gpu=auto"
        )
    return mode


@lru_cache(maxsize=1)
def _resources() -> Any:
    import faiss

    return faiss.StandardGpuResources()


def flat_index(dim: int, inner_product: bool, mode: str = "auto") -> Any | None:
    """A GPU flat index for k-means assignment, or None when the CPU should be used."""
    if mode == "off" or gpu_count() == 0:
        return None
    import faiss

    try:
        config = faiss.GpuIndexFlatConfig()
        config.device = 0
        make = faiss.GpuIndexFlatIP if inner_product else faiss.GpuIndexFlatL2
        return make(_resources(), dim, config)
    except Exception:
        if mode == "on":
            raise
        log.warning("FAISS GPU index failed; training on the CPU", exc_info=True)
        return None
