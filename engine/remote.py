"""`RemoteEngine`: the Python API of `Engine` and `Collection`, served by `hubsearch serve`.

A backend moves from embedded to served by changing one line (``Engine(home)`` ->
``RemoteEngine(url, api_key=...)``): the same methods return the same `Hit`, `AddReport` and
`Document` objects and raise the same `engine.errors` exceptions, mapped back from the server's
``{"error": {"type", "message"}}``. Standard library only (http.client), so it works in the
core install without the serve extra. Each thread keeps its own keep-alive connection.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from engine.collection import AddReport, Hit
from engine.errors import BadInput, HubsearchError
from engine.manifest import Manifest
from engine.serve import wire
from engine.store import Document

#: Failures of a kept-alive connection the server closed meanwhile: sent again once, on a new one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class RemoteEngine:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._ssl = ssl_context
        self._local = threading.local()

    # -- Engine's methods ---------------------------------------------------------------------

    def create(
        self,
        name: str,
        encoder: str = "use-multilingual",
        index: str = "auto",
        options: dict[str, Any] | None = None,
        index_options: dict[str, Any] | None = None,
    ) -> RemoteCollection:
        """As `Engine.create`, without ``store_url``: where a served collection keeps its
        documents is the server's decision, not a client's."""
        body = {
            "name": name,
            "encoder": encoder,
            "index": index,
            "options": options,
            "index_options": index_options,
        }
        info = _manifest(self.request("POST", "/collections", body))
        return RemoteCollection(self, name, info.dim)

    def open(self, name: str) -> RemoteCollection:
        return RemoteCollection(self, name, self.info(name).dim)

    def info(self, name: str) -> Manifest:
        return _manifest(self.request("GET", f"/collections/{_seg(name)}"))

    def list(self) -> list[str]:
        return self.request("GET", "/collections")["collections"]

    def drop(self, name: str) -> None:
        self.request("DELETE", f"/collections/{_seg(name)}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer; an error answer raises the engine's exception for it."""
        status, data, headers = self.raw(method, path, body)
        if status >= 400:
            raise _error(status, data)
        if "json" not in headers.get("content-type", ""):
            return data
        return json.loads(data)

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, dict[str, str]]:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE:
                self.close()
                if attempt:
                    raise
                continue
            except OSError:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data, {k.lower(): v for k, v in response.getheaders()}
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._scheme == "https":
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn


class RemoteCollection:
    """`Collection`'s methods over HTTP."""

    def __init__(self, engine: RemoteEngine, name: str, dim: int) -> None:
        self.engine = engine
        self.name = name
        self.dim = dim
        self._path = f"/collections/{_seg(name)}"

    @property
    def manifest(self) -> Manifest:
        return self.engine.info(self.name)

    def count(self) -> int:
        return self.engine.request("GET", f"{self._path}/count")["count"]

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        answer = self.engine.request("POST", f"{self._path}/get", {"ids": _ids(ids)})
        return [wire.document_from(d) for d in answer["documents"]]

    def search(
        self,
        query: str | None = None,
        *,
        image: Any = None,
        vector: Any = None,
        k: int = 10,
        where: dict[str, Any] | str | None = None,
        modality: str | None = None,
        min_score: float | str | None = None,
        mode: str | None = None,
        alpha: float | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        body = _ranking(k, where, modality, min_score, mode, alpha, fusion)
        if query is not None:
            body["query"] = query
        if image is not None:
            body["image"] = _b64(_image_bytes(image))
        if vector is not None:
            body["vector_b64"] = _vectors_b64(vector)
        answer = self.engine.request("POST", f"{self._path}/search", body)
        return [wire.hit_from(h) for h in answer["hits"]]

    def search_many(
        self,
        queries: Sequence[str] | None = None,
        *,
        images: Sequence[Any] | None = None,
        vectors: Any = None,
        k: int = 10,
        where: dict[str, Any] | str | None = None,
        modality: str | None = None,
        batch_size: int | None = None,
        min_score: float | str | None = None,
        mode: str | None = None,
        alpha: float | None = None,
        fusion: str | None = None,
    ) -> list[list[Hit]]:
        body = _ranking(k, where, modality, min_score, mode, alpha, fusion)
        if queries is not None:
            body["queries"] = list(queries)
        if images is not None:
            body["images"] = [_b64(_image_bytes(x)) for x in images]
        if vectors is not None:
            body["vectors_b64"] = _vectors_b64(vectors)
        answer = self.engine.request("POST", f"{self._path}/search_many", body)
        return [[wire.hit_from(h) for h in hits] for hits in answer["results"]]

    def add(
        self,
        texts: Sequence[Any] | None = None,
        *,
        images: Sequence[Any] | None = None,
        vectors: Any = None,
        ids: Sequence[Any] | None = None,
        metadata: Sequence[Any] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AddReport:
        """Add or replace documents; images (paths or bytes) are uploaded and kept by the server.

        A returned report means the server committed the add. ``batch_size`` splits the call
        into several requests (each one committed on its own), for batches over the server's
        limit.
        """
        body: dict[str, Any] = {
            "texts": None if texts is None else list(texts),
            "images": None if images is None else [_b64(_image_bytes(x)) for x in images],
            "vectors_b64": None if vectors is None else _vectors_b64(vectors),
            "ids": _ids(ids) if ids is not None else None,
            "metadata": None if metadata is None else list(metadata),
        }
        if images is not None and ids is None:
            body["ids"] = [
                os.path.basename(os.fspath(x)) if isinstance(x, (str, os.PathLike)) else None
                for x in images
            ]
            if None in body["ids"]:
                body["ids"] = None
        answer = self.engine.request("POST", f"{self._path}/add", body)
        return wire.report_from(answer)

    def delete(self, ids: Sequence[Any]) -> int:
        return self.engine.request("POST", f"{self._path}/delete", {"ids": _ids(ids)})["deleted"]

    def reindex(self, index: str, options: dict[str, Any] | None = None) -> Manifest:
        body = {"index": index, "options": options}
        return _manifest(self.engine.request("POST", f"{self._path}/reindex", body))

    def compact(self) -> Manifest:
        return _manifest(self.engine.request("POST", f"{self._path}/compact"))

    def checkpoint(self) -> None:
        self.engine.request("POST", f"{self._path}/checkpoint")

    def fetch(self, content: str) -> bytes:
        """The bytes of a stored upload, from the ``content`` of its hit or document."""
        status, data, _ = self.engine.raw("GET", content)
        if status >= 400:
            raise _error(status, data)
        return data


def _error(status: int, data: bytes) -> HubsearchError:
    try:
        err = json.loads(data)["error"]
        return wire.exception_for(status, str(err["type"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        text = data[:200].decode("utf-8", "replace")
        return wire.ServerError(f"HTTP {status}: {text}", status, "HTTPError")


def _manifest(data: dict[str, Any]) -> Manifest:
    return Manifest.from_json(json.dumps(data), "the server's answer")


def _seg(name: str) -> str:
    from engine.api import check_name

    return quote(check_name(name), safe="")  # the BadInput Engine gives, before any request


def _ids(ids: Any) -> list[Any]:
    if isinstance(ids, (str, bytes)):
        raise BadInput("ids must be a list, not a single string")
    return [i if isinstance(i, (str, int)) and not isinstance(i, bool) else str(i) for i in ids]


def _ranking(k: int, where: Any, modality: Any, *extra: Any) -> dict[str, Any]:
    """A search body's ranking fields; the newer ones only when given, so an older server,
    which refuses unknown fields, still answers the searches it can."""
    body: dict[str, Any] = {"k": k, "where": _where(where), "modality": modality}
    for name, value in zip(("min_score", "mode", "alpha", "fusion"), extra, strict=True):
        if value is not None:
            body[name] = value
    return body


def _where(where: Any) -> Any:
    if isinstance(where, str):
        try:
            return json.loads(where)
        except ValueError as exc:
            raise BadInput(f"where: not valid JSON ({exc})") from None
    return where


def _vectors_b64(vectors: Any) -> str:
    arr = np.asarray(vectors, dtype="<f4")
    return _b64(np.ascontiguousarray(arr).tobytes())


def _image_bytes(item: Any) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        try:
            with open(item, "rb") as f:
                return f.read()
        except OSError as exc:
            raise BadInput(f"image {os.fspath(item)!r}: {exc.strerror or exc}") from None
    raise BadInput(f"image: expected a path or bytes, got {type(item).__name__}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
