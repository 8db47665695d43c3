"""Request bodies: what the OpenAPI page documents and what a 422 refuses.

Vectors come as JSON lists (for curl) or as ``*_b64``, little-endian float32 bytes in base64
(what ``RemoteEngine`` sends: exact, and 5x smaller than decimal text). Images come as base64
(or as multipart uploads on the ``/images`` routes).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    name: str
    encoder: str = "use-multilingual"
    index: str = "auto"
    options: dict[str, Any] | None = None
    index_options: dict[str, Any] | None = None


class AddBody(_Body):
    texts: list[str] | None = None
    images: list[str] | None = None  # base64
    vectors: list[list[float]] | None = None
    vectors_b64: str | None = None
    ids: list[str | int] | None = None
    metadata: list[dict[str, Any] | None] | None = None


class _Ranking(_Body):
    """How hits are ranked, as ``Collection.search`` takes it (engine/hybrid.py)."""

    k: int = 10
    where: dict[str, Any] | None = None
    modality: str | None = None
    min_score: float | str | None = None
    mode: str | None = None
    alpha: float | None = None
    fusion: str | None = None

    def ranking(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "where": self.where,
            "modality": self.modality,
            "min_score": self.min_score,
            "mode": self.mode,
            "alpha": self.alpha,
            "fusion": self.fusion,
        }


class SearchBody(_Ranking):
    query: str | None = None
    image: str | None = None  # base64
    vector: list[float] | None = None
    vector_b64: str | None = None


class SearchManyBody(_Ranking):
    queries: list[str] | None = None
    images: list[str] | None = None  # base64
    vectors: list[list[float]] | None = None
    vectors_b64: str | None = None


class IdsBody(_Body):
    ids: list[str | int]


class ReindexBody(_Body):
    index: str
    options: dict[str, Any] | None = None
