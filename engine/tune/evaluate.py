"""Validation figures of a space (base or tuned) and the abstention threshold calibrated on them.

Retrieval is judged as users meet it: each validation query searches the candidates by cosine
similarity, and the top hit is right when it belongs to the query's group (same label, or the
paired document). The threshold is where answering only above it is right most often: a wrong
top hit and an out-of-scope query (a negative) should both fall below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.tune.data import Examples
from engine.tune.head import Head

CHUNK = 1024


def evaluate(
    head: Head | None, ex: Examples, negatives: np.ndarray | None = None
) -> dict[str, Any]:
    """kNN@1, recall@5, MRR, the calibrated threshold and the abstention figures at it."""
    apply = (lambda x: x) if head is None else head.apply
    cands = apply(ex.candidates)
    top, correct, ranks, margins = [], [], [], []
    queries = apply(ex.val_queries)
    for s in range(0, len(queries), CHUNK):
        sims = queries[s : s + CHUNK] @ cands.T
        groups = ex.val_groups[s : s + CHUNK]
        relevant = groups[:, None] == ex.candidate_groups[None, :]
        best = sims.argmax(axis=1)
        top.append(sims[np.arange(len(sims)), best])
        correct.append(relevant[np.arange(len(sims)), best])
        best_relevant = np.where(relevant, sims, -np.inf).max(axis=1)
        best_other = np.where(relevant, -np.inf, sims).max(axis=1)
        margins.append(np.clip(best_relevant - best_other, -2, 2))
        ranks.append(1 + (sims > best_relevant[:, None]).sum(axis=1))
    top_sims = np.concatenate(top) if top else np.zeros(0)
    right = np.concatenate(correct) if correct else np.zeros(0, bool)
    rank = np.concatenate(ranks) if ranks else np.zeros(0)
    in5 = rank <= 5
    neg = np.zeros(0)
    if negatives is not None and len(negatives):
        neg = _top(apply(negatives), cands)
    stand_ins = _stand_ins(ex, queries, cands)
    threshold = calibrate(top_sims, right, np.concatenate([neg, stand_ins]))
    out = {
        "knn@1": float(right.mean()) if len(right) else 0.0,
        "recall@5": float(in5.mean()) if len(in5) else 0.0,
        "mrr": float((1.0 / rank).mean()) if len(rank) else 0.0,
        #: mean (best right candidate - best wrong one): moves before kNN@1 does on a small
        #: validation set, so early stopping can tell a still-improving head from a flat one
        "margin": float(np.concatenate(margins).mean()) if margins else 0.0,
        **abstention(top_sims, right, neg, threshold),
    }
    if len(stand_ins):
        out["stand_ins_rejected"] = float((stand_ins < threshold).mean())
    return out


def _top(queries: np.ndarray, cands: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [(queries[s : s + CHUNK] @ cands.T).max(axis=1) for s in range(0, len(queries), CHUNK)]
    )


def _stand_ins(ex: Examples, queries: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """Top similarities of held labels' validation queries among the other labels' documents.

    Without negatives the validation queries are all in scope, and a threshold calibrated on
    them alone answers nearly everything (on BANKING77: 94.5 % of questions of ten intents it
    had never seen). Hiding a few labels' documents turns their queries into out-of-scope ones.
    """
    if not len(ex.held):
        return np.zeros(0)
    asked = np.isin(ex.val_groups, ex.held)
    others = ~np.isin(ex.candidate_groups, ex.held)
    if not asked.any() or not others.any():
        return np.zeros(0)
    return _top(queries[asked], cands[others])


def abstention(
    top: np.ndarray, right: np.ndarray, neg: np.ndarray, threshold: float
) -> dict[str, Any]:
    answered = top >= threshold
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "answered_right": float((answered & right).mean()) if len(top) else 0.0,
        "answered_wrong": float((answered & ~right).mean()) if len(top) else 0.0,
    }
    if len(neg):
        out["negatives_rejected"] = float((neg < threshold).mean())
    return out


def calibrate(top: np.ndarray, right: np.ndarray, neg: np.ndarray) -> float:
    """The similarity floor that best separates right answers from wrong ones and negatives.

    The share of validation queries handled well (right and answered, or wrong and held back);
    with negatives (given ones, and the held labels' stand-ins), their rejection rate counts as
    much as that share.
    Ties go to the lowest floor, which answers most.
    """
    if not len(top):
        return 0.0
    cands = np.unique(np.concatenate([top, neg, [-1.0]]))
    good_sorted = np.sort(top[right])
    bad_sorted = np.sort(top[~right])
    # answered right: good >= t; held back wrong: bad < t
    ans_right = len(good_sorted) - np.searchsorted(good_sorted, cands, side="left")
    held_wrong = np.searchsorted(bad_sorted, cands, side="left")
    known = (ans_right + held_wrong) / len(top)
    if len(neg):
        rejected = np.searchsorted(np.sort(neg), cands, side="left") / len(neg)
        score = 0.5 * known + 0.5 * rejected
    else:
        score = known
    best = float(cands[int(np.argmax(score))])
    # Any floor between the highest similarity held back and the lowest answered right one
    # scores the same: take the middle of that gap, not its edge, so a query like the lowest
    # right one is not refused by a rounding.
    answered = top[right & (top >= best)]
    held = np.concatenate([top[~right], neg])
    held = held[held < best]
    if not len(answered):
        return best
    if not len(held):
        return float(answered.min())
    return float((held.max() + answered.min()) / 2)


def better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """Whether the tuned space beats the base on validation: kNN@1 first, then MRR."""
    return (after["knn@1"], after["mrr"]) > (before["knn@1"], before["mrr"])
