"""What server and client agree on: error types and statuses, and the JSON shape of results.

Shared so that ``RemoteEngine`` raises exactly the exception ``Engine`` would: the server names
the engine's error class in ``{"error": {"type", "message"}}`` and the client maps it back.
Standard library only: the client works in the core install.
"""

from __future__ import annotations

from typing import Any

from engine import errors
from engine.collection import AddReport, Hit
from engine.store import Document

#: Engine errors by name, with the HTTP status each one gets.
ENGINE_ERRORS: dict[str, tuple[type[errors.HubsearchError], int]] = {
    "BadInput": (errors.BadInput, 400),
    "PluginNotFound": (errors.PluginNotFound, 400),
    "SpaceMismatch": (errors.SpaceMismatch, 409),
    "CollectionNotFound": (errors.CollectionNotFound, 404),
    "CollectionExists": (errors.CollectionExists, 409),
    "CollectionLocked": (errors.CollectionLocked, 503),
    "PluginLoadError": (errors.PluginLoadError, 500),
    "CorruptCollection": (errors.CorruptCollection, 500),
    "HubsearchError": (errors.HubsearchError, 500),
}


class ServerError(errors.HubsearchError):
    """The server refused or failed a request for a reason the embedded engine never has
    (a missing or wrong key, a body over the limit, a timeout); ``status`` and ``type`` say
    which."""

    def __init__(self, message: str, status: int, type_: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_


class Unauthorized(ServerError):
    """401: no API key, or one the server does not know."""


class Forbidden(ServerError):
    """403: the key lacks the scope (read, write, admin) the request needs."""


class TooLarge(ServerError, errors.BadInput):
    """413: the body or batch is over the server's limit; send smaller batches."""


class Timeout(ServerError):
    """504: the server gave up waiting for the answer (request timeout)."""


SERVER_ERRORS: dict[str, type[ServerError]] = {
    "Unauthorized": Unauthorized,
    "Forbidden": Forbidden,
    "TooLarge": TooLarge,
    "Timeout": Timeout,
}
#: Request bodies the schema refuses (422) are bad input, as the engine would say.
SCHEMA_ERROR = "InvalidRequest"


def error_of(exc: errors.HubsearchError) -> tuple[int, str]:
    """The HTTP status and type name of an engine error (its nearest known class)."""
    if isinstance(exc, ServerError):
        return exc.status, exc.type
    for klass in type(exc).__mro__:
        known = ENGINE_ERRORS.get(klass.__name__)
        if known is not None and klass is known[0]:
            return known[1], klass.__name__
    return 500, "HubsearchError"


def exception_for(status: int, type_: str, message: str) -> errors.HubsearchError:
    """The exception a client raises for an error answer."""
    if type_ in ENGINE_ERRORS:
        return ENGINE_ERRORS[type_][0](message)
    if type_ == SCHEMA_ERROR:
        return errors.BadInput(message)
    klass = SERVER_ERRORS.get(type_, ServerError)
    return klass(message, status, type_)


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.id,
        "score": hit.score,
        "content": hit.content,
        "metadata": hit.metadata,
        "modality": hit.modality,
        # Both sides' scores, as the embedded Hit has them: min_score and a hybrid's caller
        # read the similarity, which a fused score does not show.
        "similarity": hit.similarity,
        "keyword_score": hit.keyword_score,
    }


def hit_from(data: dict[str, Any]) -> Hit:
    return Hit(
        data["id"], data["score"], data["content"], data["metadata"], data["modality"],
        similarity=data.get("similarity"), keyword_score=data.get("keyword_score"),
    )  # fmt: skip


def document_json(doc: Document | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {
        "id": doc.id,
        "content": doc.content,
        "metadata": doc.metadata,
        "modality": doc.modality,
        "internal_id": doc.internal_id,
    }


def document_from(data: dict[str, Any] | None) -> Document | None:
    if data is None:
        return None
    return Document(
        data["id"], data["content"], data["metadata"], data["modality"], data["internal_id"]
    )


def report_json(report: AddReport) -> dict[str, Any]:
    return {
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped": [list(s) for s in report.skipped],
    }


def report_from(data: dict[str, Any]) -> AddReport:
    return AddReport(
        data["added"],
        data["updated"],
        data["unchanged"],
        [(str(a), str(b)) for a, b in data["skipped"]],
    )
