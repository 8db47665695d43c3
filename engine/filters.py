"""The `where` filter language, compiled to parameterised SQL over the metadata table.

    {"lang": "de", "year": {"$gte": 2020}, "tag": {"$in": ["billing", "card"]},
     "$or": [{"tier": "gold"}, {"vip": true}]}

Keys at one level are ANDed. A bare value means ``$eq``. A list-valued metadata field matches when
any element matches. ``$ne``/``$nin`` also match documents without the field, like MongoDB.
Every field name and value travels as a bound parameter, so nothing a user writes becomes SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, false, func, not_, or_, select, true

from engine import keyword_store
from engine.errors import BadInput
from engine.limits import FLOAT_INT_BOUND, MAX_WHERE_DEPTH, MAX_WHERE_TERMS, deeper_than

COMPARISONS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}
LOGICAL = {"$and", "$or"}
#: Not metadata but a property of every document: "text" or "image" (mixed collections).
MODALITY = "$modality"
#: A keyword match (every word of the value) against the collection's keyword index.
TEXT = "$text"

Scalar = str | int | float | bool | None


def parse_where(where: Any) -> dict[str, Any] | None:
    """Accept a dict, a JSON string or None; anything else is a BadInput."""
    if where is None or where == {}:
        return None
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except json.JSONDecodeError as exc:
            raise BadInput(f"where: not valid JSON ({exc.msg} at char {exc.pos})") from None
        except RecursionError:
            raise BadInput(
                f"where: nested deeper than {MAX_WHERE_DEPTH} levels of objects and lists"
            ) from None
    if not isinstance(where, dict):
        raise BadInput(f"where: expected a JSON object, got {type(where).__name__}")
    check_where_size(where)
    return where or None


def check_where_size(where: dict[str, Any]) -> None:
    """Refuse filters nested or sprawling past the limits, before anything recurses over them.

    Compiling, hashing (the filter cache) and SQLite's parser all recurse; without these bounds
    a filter nested 3,000 deep was a RecursionError and an $or of 40,000 branches an SQLite
    "Expression tree is too large".
    """
    if deeper_than(where, MAX_WHERE_DEPTH):
        raise BadInput(f"where: nested deeper than {MAX_WHERE_DEPTH} levels of objects and lists")
    terms, stack = 0, [where]
    while stack:
        node = stack.pop()
        for key, value in node.items():
            if not isinstance(key, str):
                raise BadInput(f"where: field names are strings, got {key!r}")
            if key in LOGICAL and isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, dict))
            else:
                terms += len(value) if isinstance(value, dict) and key != MODALITY else 1
        if terms > MAX_WHERE_TERMS:
            raise BadInput(
                f"where: more than {MAX_WHERE_TERMS} conditions; "
                f'match many values of one field with {{"field": {{"$in": [...]}}}}'
            )


def uses_text(where: dict[str, Any] | None) -> bool:
    """True when ``where`` holds a ``$text`` condition at any level."""
    if not where:
        return False
    return any(
        key == TEXT or (key in LOGICAL and isinstance(value, list) and any(
            isinstance(v, dict) and uses_text(v) for v in value
        ))
        for key, value in where.items()
    )


def referenced_fields(where: dict[str, Any]) -> set[str]:
    fields: set[str] = set()
    for key, value in where.items():
        if key in LOGICAL:
            for sub in _sub_filters(key, value):
                fields |= referenced_fields(sub)
        elif not key.startswith("$"):
            fields.add(key)
    return fields


def compile_where(
    where: dict[str, Any],
    doc_id: ColumnElement[Any],
    meta: Table,
    modality: ColumnElement[Any] | None = None,
    dialect: str = "sqlite",
) -> ColumnElement[bool]:
    """A boolean SQL expression over ``doc_id`` that is true for documents matching ``where``.

    ``dialect`` is the store's: on SQLite a value list travels as one bound parameter.
    """
    clauses = []
    for key, value in where.items():
        if key in LOGICAL:
            subs = [
                compile_where(s, doc_id, meta, modality, dialect) for s in _sub_filters(key, value)
            ]
            clauses.append(and_(*subs) if key == "$and" else or_(*subs))
        elif key == MODALITY and modality is not None:
            clauses.append(_modality_clause(value, modality, dialect))
        elif key == TEXT:
            clauses.append(keyword_store.text_clause(doc_id, value, dialect))
        elif key.startswith("$"):
            raise BadInput(
                f"where: unknown operator {key!r} (use $and, $or, $text or a field name)"
            )
        else:
            clauses.append(_field_clause(key, value, doc_id, meta, dialect))
    return and_(true(), *clauses)


def _modality_clause(value: Any, modality: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    values = value.get("$in") if isinstance(value, dict) and set(value) == {"$in"} else [value]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadInput('where: $modality takes "text", "image" or {"$in": [...]}')
    return one_of(modality, values, dialect)


def one_of(column: ColumnElement[Any], values: list[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN values``, on SQLite with the list as ONE bound parameter (a JSON array).

    A parameter per value failed past SQLite's host-parameter limit (32,766, or 999 on older
    builds) with "too many SQL variables"; chunking cannot help inside one expression that
    $nin negates or an $or combines, while json_each keeps it one expression of any length.
    """
    if dialect != "sqlite" or len(values) < 2:
        return column.in_(values)
    each = func.json_each(json.dumps(values)).table_valued("value")
    return column.in_(select(each.c.value))


def _sub_filters(op: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise BadInput(f"where: {op} takes a non-empty list of filter objects")
    return value


def _field_clause(
    field: str, cond: Any, doc_id: ColumnElement[Any], meta: Table, dialect: str
) -> ColumnElement[bool]:
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    if not cond:
        raise BadInput(f"where: field {field!r} has an empty condition")
    parts = []
    for op, value in cond.items():
        if op not in COMPARISONS:
            raise BadInput(
                f"where: unknown operator {op!r} on field {field!r} "
                f"(known: {', '.join(sorted(COMPARISONS | LOGICAL))})"
            )
        parts.append(_comparison(field, op, value, doc_id, meta, dialect))
    return and_(*parts)


def _comparison(
    field: str, op: str, value: Any, doc_id: ColumnElement[Any], meta: Table, dialect: str
) -> ColumnElement[bool]:
    def having(condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return doc_id.in_(select(meta.c.doc_id).where(meta.c.key == field, condition))

    if op == "$exists":
        if not isinstance(value, bool):
            raise BadInput(f"where: $exists on {field!r} takes true or false")
        has_field = doc_id.in_(select(meta.c.doc_id).where(meta.c.key == field))
        return has_field if value else not_(has_field)
    if op in {"$in", "$nin"}:
        if not isinstance(value, list):
            raise BadInput(f"where: {op} on {field!r} takes a list of values")
        for v in value:
            _check_scalar(field, op, v)
        matches = having(_any_of(value, meta, dialect)) if value else false()
        return matches if op == "$in" else not_(matches)
    _check_scalar(field, op, value)
    if op in {"$eq", "$ne"}:
        matches = having(_equals(value, meta))
        return matches if op == "$eq" else not_(matches)
    if value is None or isinstance(value, bool):
        raise BadInput(f"where: {op} on {field!r} needs a number or a string, got {value!r}")
    column = meta.c.num if isinstance(value, (int, float)) else meta.c.text
    compare: dict[str, Callable[[Any], ColumnElement[bool]]] = {
        "$gt": column.__gt__,
        "$gte": column.__ge__,
        "$lt": column.__lt__,
        "$lte": column.__le__,
    }
    return having(compare[op](value))


def _equals(value: Scalar, meta: Table) -> ColumnElement[bool]:
    if value is None:
        return and_(meta.c.num.is_(None), meta.c.text.is_(None))
    if isinstance(value, (bool, int, float)):
        return meta.c.num == float(value)
    return meta.c.text == value


def _any_of(values: Iterable[Scalar], meta: Table, dialect: str) -> ColumnElement[bool]:
    values = list(values)
    # NaN and infinities never match: metadata cannot hold them (and JSON cannot carry them).
    nums = [float(v) for v in values if isinstance(v, (bool, int, float)) and math.isfinite(v)]
    texts = [v for v in values if isinstance(v, str)]
    parts = []
    if nums:
        parts.append(one_of(meta.c.num, nums, dialect))
    if texts:
        parts.append(one_of(meta.c.text, texts, dialect))
    if any(v is None for v in values):
        parts.append(_equals(None, meta))
    return or_(false(), *parts)


def _check_scalar(field: str, op: str, value: Any) -> None:
    if not (value is None or isinstance(value, (str, int, float, bool))):
        raise BadInput(
            f"where: {op} on {field!r} takes a string, number, boolean or null, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, int) and not -FLOAT_INT_BOUND < value < FLOAT_INT_BOUND:
        raise BadInput(f"where: {op} on {field!r}: an integer beyond the range of a float")


def flatten_metadata(metadata: dict[str, Any]) -> list[tuple[str, float | None, str | None]]:
    """(key, number, text) rows for the metadata table: nested keys dotted, lists expanded."""
    rows: list[tuple[str, float | None, str | None]] = []
    for key, value in metadata.items():
        # Flat scalars are nearly all metadata; handle them without the recursive walk.
        if isinstance(value, str):
            rows.append((key, None, value))
        elif isinstance(value, (bool, int, float)):
            rows.append((key, float(value), None))
        else:
            _visit(rows, str(key), value)
    return rows


def _visit(rows: list[tuple[str, float | None, str | None]], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, v in value.items():
            _visit(rows, f"{key}.{sub}", v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _visit(rows, key, v)
    elif isinstance(value, (bool, int, float)):
        rows.append((key, float(value), None))
    elif value is None:
        rows.append((key, None, None))
    else:
        rows.append((key, None, str(value)))
