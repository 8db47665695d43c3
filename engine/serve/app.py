"""The ASGI app: the Python API's calls as HTTP routes over one `Engine` per worker process.

Blocking engine calls run in the thread pool, never on the event loop, so searches run in
parallel threads (FAISS and the encoders release the GIL) while writes queue on the collection's
lock; a write that cannot get it within the server's lock timeout is a 503 with Retry-After.
Text queries go through the micro-batcher; errors and middleware are in ``middleware.py``.
Hits go out as a plain `JSONResponse`: FastAPI's generic encoder walked every hit and value
again, on the event loop, which on a busy machine is the thread everything waits for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import gc
import json
import os
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from engine.api import Engine
from engine.collection import AddReport, Collection, Hit
from engine.encoders import IMAGE, TEXT, validate_texts
from engine.errors import BadInput, HubsearchError
from engine.filters import parse_where
from engine.limits import MAX_K, check_k
from engine.serve import schemas, wire
from engine.serve.batcher import SearchBatcher
from engine.serve.blobs import (
    BLOB_NAME,
    BLOBS,
    add_uploads,
    blob_name,
    image_ext,
    public_content,
    public_contents,
)
from engine.serve.config import KeyRing, ServeConfig
from engine.serve.metrics import Metrics
from engine.serve.middleware import add_error_handlers, add_middleware, error_response, log


class Server:
    """What one worker process holds: its settings, keys, engine, batcher and metrics."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.keys = KeyRing.load(config.api_keys) if config.api_keys else None
        self.engine = Engine(config.home, lock_timeout=config.lock_timeout)
        self.metrics = Metrics(config.metrics_dir)
        self.batcher = SearchBatcher(
            self.engine.open, config.batch_window_ms / 1000, config.batch_max, self.metrics.encoder
        )
        self.ready = False
        self._limiter: anyio.CapacityLimiter | None = None

    async def warm_up(self) -> None:
        """Open every collection (index loaded, model built and run once) before /readyz says
        ready: a model's first call traces its graph, which took over the 30 s request timeout
        on a busy machine and answered the first query with a 504."""
        for name in await run_in_threadpool(self.engine.list):
            try:
                col = await run_in_threadpool(self.engine.open, name)
                if TEXT in col.encoder.modalities:
                    await run_in_threadpool(col.encoder.encode, ["warm-up"], TEXT)
            except HubsearchError as exc:  # served anyway: its requests get this error
                log({"event": "collection unavailable", "collection": name, "error": str(exc)})
        # What is loaded now (TensorFlow's graph, FastAPI, the indexes: ~400,000 objects) lives
        # as long as the process: out of the collector's sight, a full collection stops taking
        # ~0.2-0.7 s with every thread held (measured), the server's p99 stalls.
        gc.collect()
        gc.freeze()
        self.ready = True

    def scope(self, needed: str) -> Any:
        async def check(request: Request) -> None:
            if self.keys is None:
                return
            presented = request.headers.get("x-api-key") or _bearer(
                request.headers.get("authorization")
            )
            if not presented:
                raise wire.Unauthorized(
                    "this server needs an API key: send 'Authorization: Bearer KEY'",
                    401,
                    "Unauthorized",
                )
            key = self.keys.find(presented)
            if key is None:
                raise wire.Unauthorized("the API key is not known", 401, "Unauthorized")
            request.scope.setdefault("hubsearch", {})["key"] = key.label
            if needed not in key.scopes:
                raise wire.Forbidden(
                    f"the key {key.label!r} lacks the {needed!r} scope", 403, "Forbidden"
                )

        return Depends(check)

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A blocking read in the pool, answered within the request timeout."""
        return await self.timed(self.searching(fn, *args, **kwargs))

    async def searching(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a read in one of ``search_threads`` threads: more searches at once than cores
        only make them fight for the CPU (and the GIL), so the others wait on the loop."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.config.search_threads)
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def timed(self, work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, self.config.request_timeout)
        except asyncio.TimeoutError:
            raise wire.Timeout(
                f"no answer within the request timeout of {self.config.request_timeout:g} s",
                504,
                "Timeout",
            ) from None

    async def open(self, name: str) -> Collection:
        return await run_in_threadpool(self.engine.open, name)

    def check_batch(self, n: int, what: str) -> None:
        if n > self.config.max_batch:
            raise wire.TooLarge(
                f"{what}: {n:,} items is over the server's batch limit of "
                f"{self.config.max_batch:,}; send smaller batches",
                413,
                "TooLarge",
            )


def create_app(config: ServeConfig | None = None) -> FastAPI:
    server = Server(config or ServeConfig.from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(server.warm_up()),
            loop.create_task(server.metrics.keep_flushing()),
        ]
        yield
        for task in tasks:
            task.cancel()
        server.batcher.close()
        server.metrics.flush()
        server.engine.close()

    app = FastAPI(
        title="hubsearch",
        summary="Semantic search collections over HTTP (the Python API's calls as routes).",
        lifespan=lifespan,
    )
    app.state.server = server
    add_error_handlers(app)
    _add_routes(app, server)
    add_middleware(app, server.config, server.metrics)
    return app


# -- routes ---------------------------------------------------------------------------------


def _add_routes(app: FastAPI, s: Server) -> None:
    read, write, admin = s.scope("read"), s.scope("write"), s.scope("admin")

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    async def readyz() -> Any:
        if not s.ready:
            return error_response(503, "NotReady", "opening collections")
        return {"status": "ready", "collections": await run_in_threadpool(s.engine.list)}

    @app.get("/metrics", tags=["service"], dependencies=[read])
    async def metrics() -> PlainTextResponse:
        rows = await run_in_threadpool(_collection_rows, s.engine)
        text = await run_in_threadpool(s.metrics.render, rows)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/collections", tags=["collections"], dependencies=[read])
    async def list_collections() -> dict[str, Any]:
        return {"collections": await run_in_threadpool(s.engine.list)}

    @app.post("/collections", tags=["collections"], status_code=201, dependencies=[admin])
    async def create(body: schemas.CreateBody) -> dict[str, Any]:
        col = await run_in_threadpool(
            s.engine.create,
            body.name,
            encoder=body.encoder,
            index=body.index,
            options=body.options,
            index_options=body.index_options,
        )
        return _info(col.manifest)

    @app.get("/collections/{name}", tags=["collections"], dependencies=[read])
    async def info(name: str) -> dict[str, Any]:
        return _info(await run_in_threadpool(s.engine.info, name))

    @app.delete("/collections/{name}", tags=["collections"], dependencies=[admin])
    async def drop(name: str) -> dict[str, Any]:
        await run_in_threadpool(s.engine.drop, name)
        return {"dropped": name}

    @app.post("/collections/{name}/add", tags=["documents"], dependencies=[write])
    async def add(name: str, body: schemas.AddBody) -> dict[str, Any]:
        col = await s.open(name)
        given = [x for x in (body.texts, body.images, body.vectors) if x is not None]
        s.check_batch(max([len(x) for x in given], default=0), "add")
        vectors = _vectors(body.vectors, body.vectors_b64, col.dim, "vectors")
        if vectors is not None:
            s.check_batch(len(vectors), "add")
        if body.images is not None:
            if body.texts is not None:
                raise BadInput("add takes texts or images, not both")
            uploads = [_b64(x, f"images[{i}]") for i, x in enumerate(body.images)]
            report = await _add_uploads(col, uploads, None, body.ids, body.metadata, vectors)
        else:
            report = await run_in_threadpool(
                col.add, body.texts, vectors=vectors, ids=body.ids, metadata=body.metadata
            )
        return wire.report_json(report)

    @app.post("/collections/{name}/images", tags=["documents"], dependencies=[write])
    async def add_images(
        name: str,
        files: list[UploadFile] = File(...),  # noqa: B008 (FastAPI's way of declaring parts)
        ids: str | None = Form(None, description="JSON list of ids, one per file"),
        metadata: str | None = Form(None, description="JSON list of objects, one per file"),
    ) -> dict[str, Any]:
        s.check_batch(len(files), "images")
        col = await s.open(name)
        uploads = [await f.read() for f in files]
        names = [os.path.basename(f.filename or "") or None for f in files]
        id_list = _json_form(ids, "ids")
        meta_list = _json_form(metadata, "metadata")
        report = await _add_uploads(col, uploads, names, id_list, meta_list, None)
        return wire.report_json(report)

    @app.post("/collections/{name}/search", tags=["search"], dependencies=[read])
    async def search(name: str, body: schemas.SearchBody) -> JSONResponse:
        given = (body.image, body.vector, body.vector_b64)
        if body.query is not None and all(x is None for x in given):
            col, hits = await s.timed(_search_text(s, name, body.query, body.ranking()))
            return JSONResponse({"hits": _hits_json(col, hits)})
        image = None if body.image is None else _b64(body.image, "image")
        one_vector = body.query is None and image is None and given.count(None) == 2
        if one_vector and s.batcher.enabled:
            # One vector: batched with its neighbours (its dimension is checked where the
            # collection is known; a wrong one fails alone, see batcher.py).
            _check_ranking(body.ranking())
            rows = None if body.vector is None else [body.vector]
            vector = _vectors(rows, body.vector_b64, None, "vector")[0]  # type: ignore[index]
            col, hits = await s.timed(s.batcher.search(name, vector, body.ranking()))
            return JSONResponse({"hits": _hits_json(col, hits)})

        def run() -> tuple[Collection, list[Hit]]:
            # Opened in the search's own thread: one pool hop a request, not two (under load
            # each hop queued behind the other requests' work).
            col = s.engine.open(name)
            rows = None if body.vector is None else [body.vector]
            vector = _vectors(rows, body.vector_b64, col.dim, "vector")
            return col, col.search(body.query, image=image, vector=vector, **body.ranking())

        col, hits = await s.read(run)
        return JSONResponse({"hits": _hits_json(col, hits)})

    @app.post("/collections/{name}/search/image", tags=["search"], dependencies=[read])
    async def search_image(
        name: str,
        file: UploadFile = File(...),  # noqa: B008
        k: int = Form(10),
        where: str | None = Form(None, description="JSON filter"),
        modality: str | None = Form(None),
    ) -> JSONResponse:
        col = await s.open(name)
        image = await file.read()
        flt = _json_form(where, "where")
        hits = await s.read(col.search, None, image=image, k=k, where=flt, modality=modality)
        return JSONResponse({"hits": _hits_json(col, hits)})

    @app.post("/collections/{name}/search_many", tags=["search"], dependencies=[read])
    async def search_many(name: str, body: schemas.SearchManyBody) -> JSONResponse:
        col = await s.open(name)
        vectors = _vectors(body.vectors, body.vectors_b64, col.dim, "vectors")
        images = None if body.images is None else [_b64(x, "images") for x in body.images]
        for x in (body.queries, images, vectors):
            if x is not None:
                s.check_batch(len(x), "search_many")
        results = await s.read(
            col.search_many,
            body.queries,
            images=images,
            vectors=vectors,
            **body.ranking(),
        )
        return JSONResponse({"results": [_hits_json(col, hits) for hits in results]})

    @app.post("/collections/{name}/get", tags=["documents"], dependencies=[read])
    async def get(name: str, body: schemas.IdsBody) -> JSONResponse:
        s.check_batch(len(body.ids), "get")
        col = await s.open(name)
        docs = await s.read(col.get, body.ids)
        return JSONResponse({"documents": [_doc_json(col, d) for d in docs]})

    @app.post("/collections/{name}/delete", tags=["documents"], dependencies=[write])
    async def delete(name: str, body: schemas.IdsBody) -> dict[str, int]:
        s.check_batch(len(body.ids), "delete")
        col = await s.open(name)
        return {"deleted": await run_in_threadpool(col.delete, body.ids)}

    @app.get("/collections/{name}/count", tags=["documents"], dependencies=[read])
    async def count(name: str) -> dict[str, int]:
        col = await s.open(name)
        return {"count": await s.read(col.count)}

    @app.post("/collections/{name}/reindex", tags=["upkeep"], dependencies=[write])
    async def reindex(name: str, body: schemas.ReindexBody) -> dict[str, Any]:
        col = await s.open(name)
        return _info(await run_in_threadpool(col.reindex, body.index, body.options))

    @app.post("/collections/{name}/compact", tags=["upkeep"], dependencies=[write])
    async def compact(name: str) -> dict[str, Any]:
        col = await s.open(name)
        return _info(await run_in_threadpool(col.compact))

    @app.post("/collections/{name}/checkpoint", tags=["upkeep"], dependencies=[write])
    async def checkpoint(name: str) -> dict[str, Any]:
        col = await s.open(name)
        await run_in_threadpool(col.checkpoint)
        return _info(col.manifest)

    @app.get(f"/collections/{{name}}/{BLOBS}/{{file}}", tags=["documents"], dependencies=[read])
    async def blob(name: str, file: str) -> FileResponse:
        col = await s.open(name)
        path = col.folder / BLOBS / file
        if not BLOB_NAME.fullmatch(file) or not path.is_file():
            raise HTTPException(404, f"no stored image {file!r} in collection {name!r}")
        return FileResponse(path)


def _check_ranking(ranking: dict[str, Any]) -> None:
    """What a query can be refused for before it joins a batch (k, the filter's syntax):
    one bad query must not fail its neighbours. The collection's own limit is checked where
    it is opened."""
    check_k(ranking["k"], MAX_K)
    parse_where(ranking["where"])


async def _search_text(
    s: Server, name: str, query: str, ranking: dict[str, Any]
) -> tuple[Collection, list[Hit]]:
    """A text query: in a batch with its neighbours (``batcher.py``), or alone when batching
    is off (one encoder call per query, the reference the batching is measured against)."""
    # Checked before joining a batch: one bad query must not fail its neighbours.
    validate_texts([query])
    if not query.strip():
        raise BadInput("query: text is empty")
    _check_ranking(ranking)
    if s.batcher.enabled:
        return await s.batcher.search(name, query, ranking)
    col = await s.open(name)
    if TEXT in col.encoder.modalities:
        s.batcher.counts[0] += 1
        s.batcher.counts[1] += 1
    return col, await s.searching(col.search, query, **ranking)


async def _add_uploads(
    col: Collection,
    uploads: list[bytes],
    names: list[str | None] | None,
    ids: list[Any] | None,
    metadata: list[Any] | None,
    vectors: np.ndarray | None,
) -> AddReport:
    """Store each upload in the collection's blobs, then add those files as images."""
    n = len(uploads)
    for given, what in ((ids, "ids"), (metadata, "metadata")):
        if given is not None and len(given) != n:
            raise BadInput(f"{what}: got {len(given)} for {n} images")
    if vectors is not None and len(vectors) != n:
        raise BadInput(f"vectors: got {len(vectors)} vectors for {n} images")

    def prepare() -> tuple[list[int], list[tuple[bytes, str]], AddReport]:
        keep, blobs, report = [], [], AddReport()
        for i, data in enumerate(uploads):
            label = (names[i] if names else None) or f"images[{i}]"
            ext = image_ext(data)
            if ext is None:
                report.skipped.append((label, "not an image this server can decode"))
                continue
            keep.append(i)
            blobs.append((data, ext))
        return keep, blobs, report

    keep, blobs, report = await run_in_threadpool(prepare)
    if not keep:
        return report
    if ids is None:
        ids = [
            (names[i] if names else None) or blob_name(*blob)
            for i, blob in zip(keep, blobs, strict=True)
        ]
    else:
        ids = [ids[i] for i in keep]
    metas = None if metadata is None else [metadata[i] for i in keep]
    vecs = None if vectors is None else vectors[keep]
    # Stored and added in one call: the blob lock is held from the files to the commit.
    _, added = await run_in_threadpool(add_uploads, col, blobs, ids, metas, vecs)
    added.skipped = [(os.path.basename(p), r) for p, r in added.skipped]
    report.merge(added)
    return report


def _vectors(rows: Any, b64: str | None, dim: int | None, label: str) -> np.ndarray | None:
    """Rows of float32 from JSON numbers or base64. ``dim`` None: one vector whose
    collection is not open yet (Collection.search checks its size)."""
    if rows is not None and b64 is not None:
        raise BadInput(f"{label}: give JSON numbers or {label}_b64, not both")
    if b64 is None:
        return None if rows is None else np.asarray(rows, dtype=np.float32)
    raw = _b64(b64, f"{label}_b64")
    width = 4 * (dim or 1)
    if len(raw) % width:
        what = f"rows of {dim} float32 values" if dim else "float32 values"
        raise BadInput(f"{label}_b64: {len(raw)} bytes are not {what}")
    flat = np.frombuffer(raw, dtype="<f4")
    return flat.reshape(1, -1) if dim is None else flat.reshape(-1, dim)


def _b64(text: str, label: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{label}: not valid base64") from None


def _json_form(text: str | None, label: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{label}: not valid JSON ({exc})") from None


def _hits_json(col: Collection, hits: list[Hit]) -> list[dict[str, Any]]:
    public = public_contents(col.name, col.folder)
    out = []
    for hit in hits:
        data = wire.hit_json(hit)
        if hit.modality == IMAGE:  # only images can be stored uploads
            data["content"] = public(hit.content)
        out.append(data)
    return out


def _doc_json(col: Collection, doc: Any) -> dict[str, Any] | None:
    data = wire.document_json(doc)
    if data is not None:
        data["content"] = public_content(col.name, col.folder, doc.content)
    return data


def _info(manifest: Any) -> dict[str, Any]:
    data = json.loads(manifest.to_json())
    if data.get("store_url"):
        from sqlalchemy.engine import make_url

        data["store_url"] = make_url(data["store_url"]).render_as_string(hide_password=True)
    return data


def _collection_rows(engine: Engine) -> list[tuple[str, int, str]]:
    rows = []
    for name in engine.list():
        try:
            m = engine.info(name)
        except HubsearchError:
            continue
        rows.append((name, m.count, str(m.index.get("state", {}).get("kind") or m.index["kind"])))
    return rows


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
