"""A lean closed-loop HTTP/1.1 load generator: keep-alive connections on asyncio protocols,
requests prebuilt as bytes, answers parsed only as far as status and Content-Length.

Why not httpx here: on the 2-core benchmark machine the generator shares the cores with the
server, and httpx's AsyncClient spent ~4 ms of CPU per request (74 % of a core at 176 q/s),
as much as the server's own work per text query. A figure taken that way shows the
generator's limit, not the server's. This one spends a few tens of microseconds per request,
so nearly all of the machine goes to the server under test. Used by ``bench/serve.py --text``
(``--generator raw``, the default there); httpx remains available for comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send a request, resolve a future with its status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buf[:end]).lower()
        i = head.find(b"content-length:")
        if i < 0:
            raise RuntimeError("answer without Content-Length (chunked is not supported)")
        length = int(head[i + 15 :].split(b"\r\n", 1)[0])
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buf[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def post_requests(url: str, bodies: list[bytes]) -> list[bytes]:
    """Each body as a complete HTTP/1.1 POST to ``url`` (JSON, keep-alive)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nConnection: keep-alive\r\n"
    ).encode()
    return [head + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies]


async def workers(
    clients: int, seconds: float, send: Callable[[int, int], Awaitable[bool]]
) -> tuple[list[float], int, float, float]:
    """The closed loop itself, whatever sends: worker ``w`` awaits ``send(w, i)`` for requests
    ``i = w, w + clients, ...`` until ``seconds`` have passed, each as soon as its last one is
    answered. Returns the latencies (s) of the requests ``send`` called answered, the count of
    the others, the wall and the generator's CPU seconds."""
    latencies: list[float] = []
    errors = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        while time.perf_counter() < end:
            start = time.perf_counter()
            if await send(w, i):
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1
            i += clients

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return latencies, errors, time.perf_counter() - t0, time.process_time() - cpu0


async def closed_loop(url: str, raws: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` connections to ``url``'s host, each sending its next request (``raws``,
    e.g. from :func:`post_requests`) when the last is answered; latencies (s) of the 200s,
    the count of other answers, wall and generator CPU seconds."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(clients):
        _, conn = await loop.create_connection(_Conn, parts.hostname, parts.port)
        conns.append(conn)
    await asyncio.gather(*(c.request(raws[i % len(raws)]) for i, c in enumerate(conns)))

    async def send(w: int, i: int) -> bool:
        try:
            return await conns[w].request(raws[i % len(raws)]) == 200
        except ConnectionError:
            _, conns[w] = await loop.create_connection(_Conn, parts.hostname, parts.port)
            return False

    latencies, errors, wall, cpu = await workers(clients, seconds, send)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return {"latencies": latencies, "errors": errors, "wall": wall, "cpu": cpu}
