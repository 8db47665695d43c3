"""Property-based tests: readers never crash on any input, filters agree with a reference."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import BadInput
from engine.ingest import Fields, read_rows

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".tsv", ".txt"]))
def test_readers_return_valid_rows_or_bad_input_on_any_bytes(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        rows = read_rows(path, Fields())
    except BadInput as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert len({r.id for r in rows}) == len(rows)
    assert all(r.text.strip() and isinstance(r.metadata, dict) for r in rows)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["id", "text", "lang", "n"]), json_values, max_size=4),
        max_size=6,
    )
)
def test_jsonl_reader_on_arbitrary_objects(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    try:
        out = read_rows(path, Fields())
    except BadInput:
        return
    assert len(out) == len(rows)
    for row, src in zip(out, rows, strict=True):
        assert row.text == src["text"] and row.metadata == {
            k: v for k, v in src.items() if k not in {"text", "id"}
        }


# -- the filter language against a reference evaluator ------------------------------------------

LANGS = ["de", "en", "fr"]
scalars = st.sampled_from(LANGS) | st.integers(0, 4) | st.booleans()
metadata = st.fixed_dictionaries(
    {},
    optional={
        "lang": st.sampled_from(LANGS),
        "n": st.integers(0, 4),
        "tag": st.lists(st.sampled_from(LANGS), max_size=2),
        "vip": st.booleans(),
    },
)


def leaf():
    field = st.sampled_from(["lang", "n", "tag", "vip"])
    cond = st.one_of(
        scalars,
        st.dictionaries(st.sampled_from(["$eq", "$ne"]), scalars, min_size=1, max_size=1),
        st.dictionaries(
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
            st.integers(0, 4),
            min_size=1,
            max_size=2,
        ),
        st.dictionaries(
            st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3), min_size=1, max_size=1
        ),
        st.dictionaries(st.just("$exists"), st.booleans(), min_size=1, max_size=1),
    )
    return st.dictionaries(field, cond, min_size=1, max_size=2)


filters = st.recursive(
    leaf(),
    lambda inner: st.dictionaries(
        st.sampled_from(["$and", "$or"]),
        st.lists(inner, min_size=1, max_size=3),
        min_size=1,
        max_size=1,
    ),
    max_leaves=6,
)


def values(doc, field):
    if field not in doc:
        return []
    v = doc[field]
    return v if isinstance(v, list) else [v]


def same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b if isinstance(a, str) and isinstance(b, str) else False
    return float(a) == float(b)


def check(op, arg, vals):
    nums = [v for v in vals if not isinstance(v, str)]
    if op == "$eq":
        return any(same(v, arg) for v in vals)
    if op == "$ne":
        return not any(same(v, arg) for v in vals)
    if op == "$in":
        return any(same(v, x) for v in vals for x in arg)
    if op == "$nin":
        return not any(same(v, x) for v in vals for x in arg)
    if op == "$exists":
        return bool(vals) == arg
    compare = {
        "$gt": float.__gt__,
        "$gte": float.__ge__,
        "$lt": float.__lt__,
        "$lte": float.__le__,
    }[op]
    return any(compare(float(v), float(arg)) for v in nums)


def ref(doc, where):
    for key, cond in where.items():
        if key == "$and" and not all(ref(doc, c) for c in cond):
            return False
        if key == "$or" and not any(ref(doc, c) for c in cond):
            return False
        if key.startswith("$"):
            continue
        if not isinstance(cond, dict):
            cond = {"$eq": cond}
        if not all(check(op, arg, values(doc, key)) for op, arg in cond.items()):
            return False
    return True


@pytest.fixture(scope="module")
def filter_col(tmp_path_factory, fake_site):
    from engine import Engine
    from engine.registry import Registry

    return Engine(tmp_path_factory.mktemp("fz"), registry=Registry()).create(
        "f", encoder="fake-hash", options={"dim": 8}
    )


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(metadata, min_size=1, max_size=12), where=filters)
def test_filters_match_exactly_what_the_reference_says(filter_col, docs, where):
    col = filter_col
    ids = [f"x{i}" for i in range(len(docs))]
    col.delete([d.id for d in col.get([f"x{i}" for i in range(12)]) if d is not None])
    col.add(texts=[f"doc {i}" for i in range(len(docs))], ids=ids, metadata=docs)
    try:
        got = {h.id for h in col.search("doc", k=50, where=where)}
    except BadInput as exc:
        assert "no document has the field" in str(exc)
        return
    expected = {i for i, d in zip(ids, docs, strict=True) if ref(d, where)}
    assert got == expected
