"""Plugin option parsing, shared by encoders and index kinds.

The CLI hands options over as strings (`-o dim=512`), Python callers as typed values; every plugin
reads them through these helpers so both roads behave the same. A leaf module (it imports only
engine.errors), so index kinds use it without depending on the encoder contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import BadInput, UnknownOption


def option_str(options: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = options.get(key, default)
    return None if value is None else str(value)


def option_int(options: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"option {key!r}: expected an integer, got {value!r}") from None


def option_float(
    options: Mapping[str, Any], key: str, default: float | None = None
) -> float | None:
    value = options.get(key, default)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadInput(f"option {key!r}: expected a number, got {value!r}") from None


def option_bool(options: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise BadInput(f"option {key!r}: expected true or false, got {value!r}")


def reject_unknown_options(options: Mapping[str, Any], known: set[str], owner: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnknownOption(
            f"{owner}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known)) or 'none'})",
            unknown[0],
        )
