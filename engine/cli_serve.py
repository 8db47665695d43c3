"""`hubsearch serve`: the collections of a home folder over HTTP (the `serve` extra).

This module stays light (click only): FastAPI and uvicorn are imported when the command runs,
and a missing extra is one line saying what to install.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import os
import shutil
import socket
import tempfile
from typing import Any

import click

from engine.errors import BadInput

EXTRA = "hubsearch serve needs the serve extra: pip install 'hubsearch[serve]'"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option(
    "--api-keys",
    type=click.Path(dir_okay=False),
    help="File of 'KEY SCOPES [LABEL]' lines (scopes: read, write, admin); required off loopback.",
)
@click.option("--lock-timeout", default=5.0, show_default=True, help="Seconds a write waits.")
@click.option("--request-timeout", default=30.0, show_default=True, help="Seconds a read may take.")
@click.option("--max-body-mb", default=64.0, show_default=True, help="Largest request body.")
@click.option("--max-batch", default=10_000, show_default=True, help="Items per add or batch.")
@click.option(
    "--batch-window-ms",
    default=3.0,
    show_default=True,
    help="Longest wait of a text query for others to share its search batch (0: off).",
)
@click.option("--batch-max", default=64, show_default=True, help="Most queries per encoder call.")
@click.option(
    "--search-threads",
    type=int,
    default=None,
    help="Reads running at once per worker (default: twice the cores); the rest queue.",
)
@click.option("--cors-origin", multiple=True, help="Allow browser calls from this origin.")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True))
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True))
@click.option("--no-access-log", is_flag=True, help="Do not log one JSON line per request.")
@click.pass_context
def serve(ctx: click.Context, **opts: object) -> None:
    """Serve the collections over HTTP (JSON API, OpenAPI page at /docs).

    \b
    hubsearch serve --port 8765
    hubsearch serve --host 0.0.0.0 --api-keys keys.txt --ssl-certfile c.pem --ssl-keyfile k.pem
    """
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError:
        raise click.ClickException(EXTRA) from None
    from engine.api import Engine
    from engine.serve.config import ENV, KeyRing, ServeConfig, is_loopback
    from engine.serve.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before the server's threads start: see engine/serve/memory.py

    config = ServeConfig(
        home=ctx.obj,
        host=str(opts["host"]),
        port=int(opts["port"]),  # type: ignore[call-overload]
        workers=max(1, int(opts["workers"])),  # type: ignore[call-overload]
        api_keys=os.path.abspath(str(opts["api_keys"])) if opts["api_keys"] else None,
        lock_timeout=float(opts["lock_timeout"]),  # type: ignore[arg-type]
        request_timeout=float(opts["request_timeout"]),  # type: ignore[arg-type]
        max_body_bytes=int(float(opts["max_body_mb"]) * 2**20),  # type: ignore[arg-type]
        max_batch=int(opts["max_batch"]),  # type: ignore[call-overload]
        batch_window_ms=float(opts["batch_window_ms"]),  # type: ignore[arg-type]
        batch_max=int(opts["batch_max"]),  # type: ignore[call-overload]
        cors_origins=tuple(opts["cors_origin"]),  # type: ignore[arg-type]
        ssl_certfile=opts["ssl_certfile"],  # type: ignore[arg-type]
        ssl_keyfile=opts["ssl_keyfile"],  # type: ignore[arg-type]
        access_log=not opts["no_access_log"],
    )
    threads = opts["search_threads"]
    if isinstance(threads, int):
        config = dataclasses.replace(config, search_threads=max(1, threads))
    if not is_loopback(config.host) and not config.api_keys:
        raise BadInput(
            f"refusing to listen on {config.host} without --api-keys: anyone who reaches it "
            f"could read, change and drop collections (use 127.0.0.1, or give a keys file)"
        )
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        raise BadInput("TLS needs both --ssl-certfile and --ssl-keyfile")
    if config.api_keys:
        KeyRing.load(config.api_keys)  # a bad keys file stops here, with its line number
    if config.workers > 1:
        shared = tempfile.mkdtemp(prefix="hubsearch-metrics-")
        atexit.register(shutil.rmtree, shared, ignore_errors=True)
        config = dataclasses.replace(config, metrics_dir=shared)
    engine = Engine(config.home)
    sock = _bind(config.host, config.port)
    os.environ[ENV] = config.to_env()  # the workers build their app from it
    scheme = "https" if config.ssl_certfile else "http"
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    names = engine.list()
    click.echo(
        f"hubsearch serve: listening on {scheme}://{shown}:{port} "
        f"({config.workers} worker{'s' * (config.workers > 1)}); home {engine.home}; "
        f"collections: {', '.join(names) if names else '(none yet)'}",
        err=True,
    )
    uv_config = uvicorn.Config(
        "engine.serve.app:create_app",
        factory=True,
        workers=config.workers,
        log_level="warning",
        access_log=False,
        ssl_certfile=config.ssl_certfile,
        ssl_keyfile=config.ssl_keyfile,
        timeout_graceful_shutdown=max(config.request_timeout, config.lock_timeout) + 5,
    )
    _run(uv_config, sock)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every answer waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _run(config: Any, sock: socket.socket) -> None:
    from uvicorn import Server
    from uvicorn.supervisors import Multiprocess

    server = Server(config)
    if config.workers > 1:
        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.30
            Multiprocess(config, target=server.run, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            Multiprocess(config, sockets=[sock]).run()  # type: ignore[arg-type]
    else:
        server.run(sockets=[sock])
