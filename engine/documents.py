"""Validation of what callers hand to ``add``: ids, texts, metadata, all checked before any write.

Nothing is stored until every item of a call has passed, so bad input never leaves half an add
behind; each message names the item (by position and id) and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from engine.errors import BadInput
from engine.limits import FLOAT_INT_BOUND, MAX_METADATA_DEPTH, deeper_than

MAX_ID_LENGTH = 512
# One encoder for every item: json.dumps with non-default options builds a new one per call.
_CANONICAL_JSON = json.JSONEncoder(allow_nan=False, sort_keys=True, ensure_ascii=False).encode


def check_ids(ids: Sequence[Any] | None, n: int, default: Sequence[str]) -> list[str]:
    if ids is None:
        ids = default
    ids = list(ids)
    if len(ids) != n:
        raise BadInput(f"ids: got {len(ids)} ids for {n} items")
    out: list[str] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(ids):
        ext = check_id(raw, f"item {i}")
        if ext in first_seen:
            raise BadInput(
                f"item {i}: duplicate id {ext!r} (also item {first_seen[ext]}) in one add"
            )
        first_seen[ext] = i
        out.append(ext)
    return out


def check_id(raw: Any, label: str) -> str:
    """One id as stored (a string); ``label`` names the item in the message."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise BadInput(f"{label}: id must be a string or integer, got {type(raw).__name__}")
    ext = str(raw)
    if not ext.strip():
        raise BadInput(f"{label}: id is empty")
    if len(ext) > MAX_ID_LENGTH:
        raise BadInput(f"{label}: id is longer than {MAX_ID_LENGTH} characters")
    problem = _unstorable(ext)
    if problem:
        raise BadInput(f"{label}: id is not valid Unicode ({problem})")
    return ext


def lookup_ids(ids: Sequence[Any]) -> list[str]:
    """Ids to look up (get, delete) as strings; one that cannot be stored is a BadInput.

    Such an id cannot exist in the store, but the database driver would fail on it with a
    bare UnicodeEncodeError instead of saying which id is wrong.
    """
    if isinstance(ids, (str, bytes)):
        raise BadInput("ids must be a list of ids, not a single string")
    out = [str(i) for i in ids]
    for i, ext in enumerate(out):
        problem = _unstorable(ext)
        if problem:
            raise BadInput(f"id {i}: not valid Unicode ({problem})")
    return out


def _unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return str(exc.reason)
    return None


def check_texts(texts: Sequence[Any], ids: Sequence[str]) -> list[str]:
    from engine.encoders import validate_texts

    checked = validate_texts(texts)
    for i, text in enumerate(checked):
        if not text.strip():
            raise BadInput(f"item {i} (id {ids[i]!r}): text is empty or whitespace only")
    return checked


def check_metadata(
    metadata: Sequence[Any] | None, n: int, ids: Sequence[str]
) -> list[tuple[dict[str, Any], str]]:
    """Each entry as (dict, canonical JSON): serialised once, then stored and hashed as is."""
    if metadata is None:
        return [({}, "{}") for _ in range(n)]
    metadata = list(metadata)
    if len(metadata) != n:
        raise BadInput(f"metadata: got {len(metadata)} entries for {n} items")
    return [
        canonical_metadata(entry, f"item {i} (id {ids[i]!r})") for i, entry in enumerate(metadata)
    ]


def canonical_metadata(entry: Any, label: str) -> tuple[dict[str, Any], str]:
    """``(entry, canonical JSON)``, or a BadInput naming ``label``; serialised once, then
    stored and hashed as is."""
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise BadInput(f"{label}: metadata must be an object, got {type(entry).__name__}")
    problem = None if _flat(entry) else _value_problem(entry)
    if problem:
        raise BadInput(f"{label}: metadata {problem}")
    try:
        text = _CANONICAL_JSON(entry)
        text.encode()  # a lone surrogate passes json but not the store
    except UnicodeEncodeError as exc:
        raise BadInput(f"{label}: metadata is not valid Unicode ({exc.reason})") from None
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{label}: metadata is not JSON ({exc})") from None
    if not _plain_keys(entry):
        bad = next(k for k in _keys(entry) if not _plain_key(k))
        raise BadInput(
            f"{label}: metadata key {bad!r} must be a non-empty string not starting with '$'"
        )
    return entry, text  # the caller's dict, not a copy: stored as `text` anyway


_FLAT = (str, float, bool, type(None))


def _flat(entry: dict[str, Any]) -> bool:
    """True for the common entry of strings and ordinary numbers: nothing more to walk."""
    for v in entry.values():
        if not isinstance(v, _FLAT) and not (
            type(v) is int and -FLOAT_INT_BOUND < v < FLOAT_INT_BOUND
        ):
            return False
    return True


def _value_problem(entry: dict[str, Any]) -> str | None:
    """Why nested or numeric metadata cannot be stored (it recursed or overflowed), or None."""
    if deeper_than(entry, MAX_METADATA_DEPTH):
        return f"nests objects and lists deeper than {MAX_METADATA_DEPTH} levels"
    stack: list[Any] = [entry]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif type(value) is int and not -FLOAT_INT_BOUND < value < FLOAT_INT_BOUND:
            return "holds an integer beyond the range of a float"
    return None


def _plain_key(key: Any) -> bool:
    return isinstance(key, str) and bool(key) and not key.startswith("$")


def _plain_keys(entry: dict[str, Any]) -> bool:
    """True when every key, nested ones included, can be named in a filter."""
    for key, value in entry.items():
        # Called once per added item: the common flat string key costs two C-level checks.
        if type(key) is not str or not key or key[0] == "$":
            return False
        if isinstance(value, (dict, list)) and not all(_plain_key(k) for k in _keys(value)):
            return False
    return True


def _keys(entry: Any) -> list[Any]:
    if isinstance(entry, dict):
        keys = list(entry)
        for value in entry.values():
            keys.extend(_keys(value))
        return keys
    if isinstance(entry, list):
        return [k for v in entry for k in _keys(v)]
    return []


def content_hash(modality: str, content: str, metadata_json: str, vector: bytes = b"") -> str:
    """Identifies an item's stored state, so re-adding an unchanged item costs nothing."""
    return hashlib.sha256(
        b"".join(
            (
                modality.encode(),
                b"\0",
                content.encode("utf-8", "surrogatepass"),
                b"\0",
                metadata_json.encode(),
                vector,
            )
        )
    ).hexdigest()


def default_text_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
