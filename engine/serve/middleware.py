"""Everything around the routes: errors as JSON, the body limit, the access log and metrics.

Every error leaves as ``{"error": {"type", "message"}}`` with its status, whatever raised it
(an engine error, the schema, routing, a bug: the last is logged, never sent).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engine.errors import HubsearchError
from engine.serve import wire
from engine.serve.config import ServeConfig
from engine.serve.metrics import Metrics

JSON_ERRORS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed"}


def error_response(status: int, type_: str, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(
        {"error": {"type": type_, "message": message}}, status_code=status, headers=headers
    )


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HubsearchError)
    async def engine_error(request: Request, exc: HubsearchError) -> JSONResponse:
        status, type_ = wire.error_of(exc)
        return error_response(status, type_, str(exc))

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5]
        ]
        return error_response(422, wire.SCHEMA_ERROR, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        type_ = "TooLarge" if exc.status_code == 413 else JSON_ERRORS.get(exc.status_code)
        return error_response(exc.status_code, type_ or "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log({"event": "internal error", "path": request.url.path, "error": repr(exc)})
        return error_response(500, "InternalError", "internal error; see the server's log")


def add_middleware(app: FastAPI, config: ServeConfig, metrics: Metrics) -> None:
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    # Added last, so outermost: refusals are logged and counted too.
    app.add_middleware(AccessLog, metrics=metrics, enabled=config.access_log)


class BodyLimit:
    """413 for a body over the limit, before any of it reaches a route or memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            # Read and drop the body first, so the client reads the answer, not a reset.
            message = {"more_body": True}
            while message.get("more_body") and message.get("type") != "http.disconnect":
                message = await receive()
            response = error_response(413, "TooLarge", self._message(int(length)))
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._message(seen))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return f"request body of {size:,} bytes is over the server's limit of {self.limit:,}"


class AccessLog:
    """One JSON line per request on stderr, and the request metrics. The key is named by its
    label from the keys file, never shown."""

    def __init__(self, app: Any, metrics: Metrics, enabled: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, scope["method"], status, seconds)
            if self.enabled:
                client = scope.get("client") or ("", 0)
                log(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        "client": client[0],
                        "key": scope.get("hubsearch", {}).get("key"),
                        "pid": os.getpid(),
                    }
                )


def log(record: dict[str, Any]) -> None:
    record = {"ts": round(time.time(), 3), **record}
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()
