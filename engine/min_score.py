"""The similarity floor of a search (`min_score`): a number, or "auto" from a tune.

It applies to a hit's vector similarity in every mode, since a fused hybrid score is on another
scale; vector and hybrid searches share it.
"""

from __future__ import annotations

from typing import Any

from engine.errors import BadInput
from engine.manifest import Manifest


def check_min_score(value: Any) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise BadInput(f"min_score must be 'auto' or a similarity between -1 and 1, got {value!r}")


def resolve_min_score(value: Any, manifest: Manifest) -> float | None:
    """The similarity floor of a search: a number as given, "auto" from the tune record."""
    if value != "auto":
        return None if value is None else float(value)
    threshold = (manifest.tune or {}).get("threshold")
    if threshold is None:
        raise BadInput(
            f"min_score='auto' needs a calibrated threshold, and collection {manifest.name!r} "
            f"has none: tune it (`hubsearch tune {manifest.name} --label-field FIELD` or "
            f"col.tune(...)) or pass a number such as min_score=0.5"
        )
    return float(threshold)
