"""What `tune` learns from: labelled documents or (query, document) pairs, split for validation.

Everything here is checked before any training starts, and a refusal names what is wrong (which
labels, which ids), so a bad input costs the user one line and changes nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.encoders import TEXT
from engine.errors import BadInput
from engine.manifest import Manifest, indexable

#: Fewer labelled examples (or pairs) than this cannot show that a head helps.
MIN_EXAMPLES = 10
#: Share of each label's (or document's) examples held out to decide whether the head helps.
VAL_FRACTION = 0.1
FETCH_CHUNK = 500
#: Share of labels played as unknown when calibrating the threshold. On BANKING77 the top
#: similarities of such stand-ins tracked those of 10 intents never trained on within 2-7
#: points of rejection rate at every threshold from 0.75 to 0.95.
HELD_LABELS = 0.1


@dataclass
class Snapshot:
    """One committed generation as tune reads it: live ids, their base vectors, their documents."""

    manifest: Manifest
    ids: np.ndarray  # internal ids, sorted
    vectors: np.ndarray  # base-space vectors, row i for ids[i]
    external: list[str]
    metadata: list[dict[str, Any]]
    #: Each document's text, None for an image or a vector (`tune --full` re-encodes texts).
    texts: list[str | None] = field(default_factory=list)


@dataclass
class Examples:
    """Training and validation sets in the base space.

    Label mode: ``anchors`` are documents and ``partners`` is None (documents of one label are
    each other's right answers). Pair mode: ``anchors`` are encoded queries and ``partners`` the
    documents they should find. Validation queries are searched among ``candidates``.
    """

    mode: str
    anchors: np.ndarray
    partners: np.ndarray | None
    groups: np.ndarray
    val_queries: np.ndarray
    val_groups: np.ndarray
    candidates: np.ndarray
    candidate_groups: np.ndarray
    #: Label mode: labels whose validation queries, searched among the other labels' documents
    #: only, stand in for out-of-scope questions when the threshold is calibrated.
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def read_snapshot(col: Any) -> Snapshot:
    """The live documents and base vectors of the newest generation, read without the write lock."""
    with col.view.reading() as served:
        m = served.manifest
        raw = col.view.vectors  # the base vectors: the log never holds mapped ones
        ids = indexable(col.store.live_ids(m.generation), m)
        vectors = raw.get(ids) if len(ids) else np.zeros((0, m.dim), np.float32)
    docs: dict[int, Any] = {}
    for start in range(0, len(ids), FETCH_CHUNK):
        docs.update(col.store.fetch(ids[start : start + FETCH_CHUNK], m.generation))
    keep = np.asarray([i in docs for i in ids.tolist()], dtype=bool)
    ids, vectors = ids[keep], vectors[keep]
    return Snapshot(
        m,
        ids,
        np.asarray(vectors, np.float32),
        [docs[i].id for i in ids.tolist()],
        [docs[i].metadata for i in ids.tolist()],
        [docs[i].content if docs[i].modality == TEXT else None for i in ids.tolist()],
    )


def from_labels(snap: Snapshot, field: str, rng: np.random.Generator) -> Examples:
    if not isinstance(field, str) or not field:
        raise BadInput("label_field must be the name of a metadata field, e.g. 'intent'")
    labels = [md.get(field) for md in snap.metadata]
    rows = np.asarray([i for i, v in enumerate(labels) if v is not None], dtype=np.int64)
    if not len(rows):
        raise BadInput(
            f"no document of collection {snap.manifest.name!r} has metadata field {field!r}: "
            f"add documents with it (e.g. metadata={{{field!r}: 'card_arrival'}})"
        )
    names = [
        json.dumps(labels[i], sort_keys=True) if not isinstance(labels[i], str) else labels[i]
        for i in rows.tolist()
    ]
    counts = Counter(names)
    singles = sorted(n for n, c in counts.items() if c == 1)
    if len(rows) < MIN_EXAMPLES or len(counts) < 2:
        raise BadInput(
            f"too few labelled examples to tune: {len(rows)} documents in {len(counts)} labels "
            f"of {field!r} ({_listing(counts)}); tune needs at least {MIN_EXAMPLES} in 2 labels"
        )
    if singles:
        raise BadInput(
            f"labels of {field!r} with one example (each needs 2: one to learn from, one to "
            f"check on): {_names(singles)}; add examples or remove those labels"
        )
    codes = {n: i for i, n in enumerate(sorted(counts))}
    groups = np.asarray([codes[n] for n in names], dtype=np.int64)
    train, val = stratified_split(groups, rng)
    vecs = snap.vectors[rows]
    held = rng.permutation(len(codes))[: max(1, round(HELD_LABELS * len(codes)))]
    return Examples(
        "labels",
        vecs[train],
        None,
        groups[train],
        vecs[val],
        groups[val],
        vecs[train],
        groups[train],
        np.sort(held) if len(codes) >= 3 else np.zeros(0, np.int64),
    )


def from_pairs(
    snap: Snapshot,
    pairs: Any,
    encoder: Any,
    rng: np.random.Generator,
    query_field: str = "query",
    id_field: str = "id",
) -> Examples:
    items = read_pairs(pairs, query_field, id_field)
    if len(items) < MIN_EXAMPLES:
        raise BadInput(f"too few pairs to tune: {len(items)}; tune needs at least {MIN_EXAMPLES}")
    row_of = {e: r for r, e in enumerate(snap.external)}
    unknown = sorted({d for _, d in items if d not in row_of})
    if unknown:
        raise BadInput(
            f"pairs name {len(unknown)} document ids that collection {snap.manifest.name!r} "
            f"does not hold: {_names(unknown)}"
        )
    texts = [q for q, _ in items]
    queries = encode_texts(encoder, texts, snap.manifest.name, "pairs")
    rows = np.asarray([row_of[d] for _, d in items], dtype=np.int64)
    train, val = stratified_split(rows, rng)
    return Examples(
        "pairs",
        queries[train],
        snap.vectors[rows[train]],
        rows[train],
        queries[val],
        rows[val],
        snap.vectors,
        np.arange(len(snap.ids), dtype=np.int64),
    )


def read_pairs(pairs: Any, query_field: str, id_field: str) -> list[tuple[str, str]]:
    """(query text, document id) from a list of pairs or a JSON-lines file."""
    if isinstance(pairs, (str, os.PathLike)):
        path = Path(pairs)
        records = read_jsonl(path)
        items = []
        for line, rec in records:
            if query_field not in rec or id_field not in rec:
                raise BadInput(
                    f"{path}:{line}: needs fields {query_field!r} and {id_field!r} "
                    f"(set them with query_field= / id_field=)"
                )
            items.append((rec[query_field], rec[id_field]))
    elif isinstance(pairs, Sequence):
        items = list(pairs)
    else:
        raise BadInput("pairs must be a list of (query text, document id) or a .jsonl file")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise BadInput(f"pair {i}: expected (query text, document id), got {item!r}")
        text, doc = item
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"pair {i}: the query text is empty")
        out.append((text, str(doc)))
    return out


def read_negatives(negatives: Any, query_field: str) -> list[str]:
    """Texts that must find no answer: a list, a .jsonl file (``query_field``) or a text file."""
    if negatives is None:
        return []
    if isinstance(negatives, (str, os.PathLike)):
        path = Path(negatives)
        if path.suffix == ".jsonl":
            texts = []
            for line, rec in read_jsonl(path):
                if query_field not in rec:
                    raise BadInput(f"{path}:{line}: needs field {query_field!r}")
                texts.append(rec[query_field])
        else:
            try:
                texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
            except OSError as exc:
                raise BadInput(f"negatives: cannot read {path}: {exc.strerror}") from None
    else:
        texts = list(negatives)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise BadInput(f"negative {i}: expected a non-empty text, got {t!r}")
    return texts


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise BadInput(f"{path}:{n}: not a JSON object") from None
        if not isinstance(rec, dict):
            raise BadInput(f"{path}:{n}: not a JSON object")
        records.append((n, rec))
    return records


def encode_texts(encoder: Any, texts: list[str], name: str, what: str) -> np.ndarray:
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    if TEXT not in encoder.modalities:
        raise BadInput(
            f"{what} are texts, and collection {name!r}'s encoder {encoder.name!r} does not "
            f"encode text; tune it with label_field= (labels on its documents) instead"
        )
    step = max(1, encoder.batch_size)
    return np.concatenate(
        [encoder.encode(texts[s : s + step], TEXT) for s in range(0, len(texts), step)]
    ).astype(np.float32)


def stratified_split(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): each group with 2+ members gives a share to validation."""
    val: list[int] = []
    order = rng.permutation(len(groups))
    by_group: dict[int, list[int]] = {}
    for row in order.tolist():
        by_group.setdefault(int(groups[row]), []).append(row)
    for members in by_group.values():
        n = len(members)
        if n >= 2:
            val.extend(members[: min(n - 1, max(1, round(VAL_FRACTION * n)))])
    if not val:  # every group has one member (pairs, one query per document)
        val = order[: max(1, round(VAL_FRACTION * len(groups)))].tolist()
    mask = np.zeros(len(groups), dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _listing(counts: Counter) -> str:
    items = [f"{n}: {c}" for n, c in sorted(counts.items())]
    return ", ".join(items[:10]) + (f", and {len(items) - 10} more" if len(items) > 10 else "")


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:10])
    return shown + (f", and {len(names) - 10} more" if len(names) > 10 else "")
