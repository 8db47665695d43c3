"""The server's settings and its API keys: read once by the CLI, handed to every worker.

Workers are separate processes (uvicorn imports the app in each), so the settings travel as
JSON in an environment variable rather than as Python objects.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import BadInput

ENV = "HUBSEARCH_SERVE_CONFIG"
SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class ServeConfig:
    home: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 1
    api_keys: str | None = None
    #: Seconds a write waits for the collection lock before answering 503 with Retry-After.
    lock_timeout: float = 5.0
    max_body_bytes: int = 64 * 2**20
    #: Items in one add, queries in one search_many.
    max_batch: int = 10_000
    #: Seconds a read (search, get, count) may take before the answer is a 504.
    request_timeout: float = 30.0
    #: Longest wait of a text query, finding its collection's lane idle, for others to share
    #: its batch (one search_many); queries arriving while a batch runs go next (0: off).
    batch_window_ms: float = 3.0
    batch_max: int = 64
    #: Searches (and other reads) running at once in one worker; the rest queue.
    search_threads: int = max(2, 2 * (os.cpu_count() or 1))
    cors_origins: tuple[str, ...] = ()
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    access_log: bool = True
    #: Folder where workers leave their metrics for each other's scrapes (several workers).
    metrics_dir: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        data = json.loads(os.environ.get(ENV, "{}"))
        data["cors_origins"] = tuple(data.get("cors_origins", ()))
        return cls(**data)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ApiKey:
    label: str
    digest: bytes
    scopes: frozenset[str]


class KeyRing:
    """API keys with their scopes; a presented key is checked against every one in constant
    time (digests compared with hmac.compare_digest, no early exit), and keys are never kept
    in the clear or written to a log: a key is named by its label."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Lines ``KEY SCOPE[,SCOPE...] [LABEL]``; blank lines and ``#`` comments are skipped."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"API keys file {path}: {exc.strerror or exc}") from None
        keys = []
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            where = f"API keys file {path}, line {n}"
            if len(parts) not in (2, 3):
                raise BadInput(f"{where}: expected 'KEY SCOPES [LABEL]'")
            key, scopes = parts[0], frozenset(parts[1].split(","))
            if len(key) < 16:
                raise BadInput(f"{where}: the key is shorter than 16 characters")
            unknown = sorted(scopes - set(SCOPES))
            if unknown:
                raise BadInput(f"{where}: unknown scope {unknown[0]!r} (use {', '.join(SCOPES)})")
            label = parts[2] if len(parts) == 3 else f"key-{n}"
            keys.append(ApiKey(label, _digest(key), scopes))
        if not keys:
            raise BadInput(f"API keys file {path} holds no key")
        return cls(keys)

    def find(self, presented: str) -> ApiKey | None:
        digest = _digest(presented)
        found = None
        for key in self.keys:  # every key is compared, matched or not
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
