"""`Engine`: the home folder of collections, and the way in for Python callers.

eng = Engine(home)
col = eng.create("faq", encoder="use-multilingual", index="flat")
col.add(texts=[...], ids=[...], metadata=[...])
col.search("how do I reset my card pin?", k=5, where={"lang": "en"})
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine import recall
from engine.blobs import BLOBS, listed
from engine.collection import Collection
from engine.encoders import IMAGE, TEXT, Encoder
from engine.errors import (
    BadInput,
    CollectionExists,
    CollectionLocked,
    CollectionNotFound,
    PluginLoadError,
    PluginNotFound,
)
from engine.keywords import VERSION as KEYWORD_VERSION
from engine.manifest import (
    MANIFEST,
    Manifest,
    fsync_dir,
    new_uuid,
    read_manifest,
    write_manifest,
)
from engine.registry import Registry, default_registry
from engine.store import Store

# fullmatch, not match with "$": "$" also matches before a final newline, so "faq\n" passed.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DEFAULT_INDEX = "auto"
T = TypeVar("T")


def default_home() -> Path:
    env = os.environ.get("HUBSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "hubsearch"


def keyword_default(encoder: Encoder, wanted: bool | None) -> bool:
    """Yes for encoders of text; on request for `precomputed` (its texts can be stored)."""
    if wanted is None:
        return TEXT in encoder.modalities
    if wanted and IMAGE in encoder.modalities and TEXT not in encoder.modalities:
        raise BadInput(f"encoder {encoder.name!r} takes only images: there are no words to index")
    return bool(wanted)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise BadInput(
            f"collection name {name!r} is not allowed: use letters, digits, '_', '-' and '.', "
            f"starting with a letter or digit, without '/' or '..'"
        )
    return name


class Engine:
    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        registry: Registry | None = None,
        lock_timeout: float = 30.0,
    ) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.registry = registry or default_registry()
        self.lock_timeout = lock_timeout
        # One loaded model per encoder configuration and one handle per collection, shared by
        # every thread: opening a collection again costs a stat, not a model load.
        self._lock = threading.Lock()
        self._encoders: dict[str, _Slot[Encoder]] = {}
        self._handles: dict[str, _Slot[Collection]] = {}

    def _folder(self, name: str) -> Path:
        return self.home / check_name(name)

    def shared_encoder(self, name: str, options: dict[str, Any] | None = None) -> Encoder:
        """The engine's encoder for this name and options, built on first use."""
        slot = self._slot(self._encoders, _key(name, options))
        with slot.lock:
            if slot.value is None:
                slot.value = self.build_encoder(name, options)
            return slot.value

    def _slot(self, table: dict[str, _Slot[Any]], key: str) -> _Slot[Any]:
        with self._lock:
            return table.setdefault(key, _Slot())

    def build_encoder(self, name: str, options: dict[str, Any] | None = None) -> Encoder:
        cls = self.registry.encoder_class(name)
        try:
            return cls(**dict(options or {}))
        except (BadInput, PluginLoadError):
            raise
        except TypeError as exc:
            raise BadInput(f"encoder {name!r}: {exc}") from None

    def create(
        self,
        name: str,
        encoder: str = "use-multilingual",
        index: str = DEFAULT_INDEX,
        options: dict[str, Any] | None = None,
        index_options: dict[str, Any] | None = None,
        store_url: str | None = None,
        keyword: bool | None = None,
    ) -> Collection:
        """Create an empty collection; it appears on disk complete or not at all.

        ``keyword``: keep a keyword index beside the vectors (searches are then hybrid by
        default). The default is yes for encoders of text on a SQLite store, the only store
        whose keyword index (FTS5) is built and tested.
        """
        folder = self._folder(name)
        if (folder / MANIFEST).exists():
            raise CollectionExists(f"collection {name!r} already exists in {self.home}")
        # The recall promise's options are index options to the user (`-o recall=0.98`) but
        # the engine keeps them: no index kind sees them, whichever dict they came in.
        options, from_encoder = recall.split_options(options)
        index_options, from_index = recall.split_options(index_options)
        recall_settings = recall.check_options({**from_encoder, **from_index})
        enc = self.shared_encoder(encoder, options)
        index_cls = self.registry.index_class(index)
        try:
            idx = index_cls(enc.dim, **dict(index_options or {}))
        except TypeError as exc:
            raise BadInput(f"index {index!r}: {exc}") from None
        self.home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".creating", dir=self.home))
        try:
            (staging / "vectors").mkdir()
            store = Store(store_url or f"sqlite:///{staging / 'store.sqlite'}")
            keyword = store.create_schema(keyword_default(enc, keyword))
            store.close()
            manifest = Manifest(
                name=name,
                encoder={"name": encoder, "options": enc.options, "fingerprint": enc.fingerprint},
                index={"kind": index, "params": idx.params, "state": idx.state()},
                store_url=store_url,
                uuid=new_uuid(),
                keyword={"version": KEYWORD_VERSION} if keyword else None,
                recall=recall_settings or None,
            )
            write_manifest(staging, manifest)
            try:
                os.rename(staging, folder)
            except OSError:
                raise CollectionExists(
                    f"collection {name!r} already exists in {self.home}"
                ) from None
            fsync_dir(self.home)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        col = Collection(folder, enc, self.registry, self.lock_timeout)
        slot = self._slot(self._handles, _key(name, None))
        with slot.lock:
            if slot.value is not None:
                slot.value.close()  # a handle on a collection of this name dropped earlier
            slot.value = col
        return col

    def open(self, name: str, encoder_options: dict[str, Any] | None = None) -> Collection:
        """The collection with the encoder it was built with (checked by fingerprint).

        Every thread may call this: the same handle is returned while the collection exists,
        so its model, index and caches are loaded once per engine.
        """
        slot = self._slot(self._handles, _key(name, encoder_options))
        with slot.lock:
            col = slot.value
            if col is not None:
                try:
                    col.view.refresh()
                    return col
                except CollectionNotFound:
                    col.close()  # dropped (and maybe re-created) since: open what is there now
                    slot.value = None
            folder = self._folder(name)
            if not (folder / MANIFEST).exists():
                raise CollectionNotFound(f"no collection named {name!r} in {self.home}")
            manifest = read_manifest(folder)
            options = {**manifest.encoder.get("options", {}), **dict(encoder_options or {})}
            enc = self.shared_encoder(manifest.encoder["name"], options)
            slot.value = Collection(folder, enc, self.registry, self.lock_timeout)
            return slot.value

    def open_with(self, name: str, encoder: Encoder) -> Collection:
        """Open with a ready encoder instance; a different embedding space is refused."""
        folder = self._folder(name)
        if not (folder / MANIFEST).exists():
            raise CollectionNotFound(f"no collection named {name!r} in {self.home}")
        return Collection(folder, encoder, self.registry, self.lock_timeout)

    def info(self, name: str) -> Manifest:
        folder = self._folder(name)
        if not (folder / MANIFEST).exists():
            raise CollectionNotFound(f"no collection named {name!r} in {self.home}")
        return read_manifest(folder)

    def keyword_stats(self, name: str) -> dict[str, int] | None:
        """Rows and bytes of a collection's keyword index (None without one); no encoder needed."""
        from engine.collection import open_store

        folder = self._folder(name)
        store = open_store(folder, self.info(name))
        try:
            return store.keyword_stats()
        finally:
            store.close()

    def external_sources(self, name: str) -> list[dict[str, str]]:
        """What a collection loads from outside hubsearch: models it runs, the store it uses.

        Models are code (a SavedModel graph can read and write files) and a store URL says
        where documents go, so these must come from people you trust; `info` shows them.
        """
        m = self.info(name)
        options = m.encoder.get("options", {})
        try:
            keys = self.registry.encoder_class(m.encoder["name"]).external_options
        except (PluginNotFound, PluginLoadError):
            keys = frozenset(options)  # cannot tell: show every option
        found = [
            {"kind": "model", "option": key, "value": str(options[key])}
            for key in sorted(keys)
            if options.get(key) not in (None, "")
        ]
        if m.store_url:
            found.append({"kind": "store", "option": "store_url", "value": m.store_url})
        return found

    def verify(self, name: str) -> list[str]:
        """Problems found in a collection's files (empty when healthy); changes nothing."""
        from engine.repair import diagnose

        return diagnose(self._existing(name), self.registry)

    def repair(self, name: str, drop_unrecoverable: bool = False) -> list[str]:
        """Rebuild what can be rebuilt (index, damaged vectors); returns the actions taken.

        Documents whose vectors cannot be restored stay (unsearchable, named by `verify`)
        unless ``drop_unrecoverable``; a damaged store raises `CorruptCollection`.
        """
        from engine.repair import repair

        actions = repair(
            self._existing(name),
            self.registry,
            self.build_encoder,
            self.lock_timeout,
            drop_unrecoverable=drop_unrecoverable,
        )
        col = self.open(name)
        col.checkpoint()  # the rebuilt index gets a fresh, checksummed snapshot
        removed = col.blobs.sweep()  # killed writes' orphans (after the write lock: engine.blobs)
        if removed:
            actions.append(
                f"removed {len(removed)} image files no document uses from {BLOBS}/ "
                f"({listed(removed)})"
            )
        col.close()
        return actions

    def _existing(self, name: str) -> Path:
        folder = self._folder(name)
        if not (folder / MANIFEST).exists():
            raise CollectionNotFound(f"no collection named {name!r} in {self.home}")
        return folder

    def list(self) -> list[str]:
        if not self.home.is_dir():
            return []
        return sorted(
            p.name
            for p in self.home.iterdir()
            if not p.name.startswith(".") and (p / MANIFEST).exists()
        )

    def drop(self, name: str) -> None:
        """Delete a collection; refused while another process is writing to it."""
        from filelock import FileLock, Timeout

        folder = self._folder(name)
        if not (folder / MANIFEST).exists():
            raise CollectionNotFound(f"no collection named {name!r} in {self.home}")
        lock = FileLock(str(folder / "write.lock"), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise CollectionLocked(
                f"collection {name!r} is being written; cannot drop it now"
            ) from None
        try:
            trash = self.home / f".{name}.dropping"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(folder, trash)
            fsync_dir(self.home)
        finally:
            lock.release()
        shutil.rmtree(trash, ignore_errors=True)
        self._forget_handles(name)

    def _forget_handles(self, name: str) -> None:
        with self._lock:
            gone = [k for k in self._handles if json.loads(k)[0] == name]
            slots = [self._handles.pop(k) for k in gone]
        for slot in slots:
            with slot.lock:
                if slot.value is not None:
                    slot.value.close()

    def close(self) -> None:
        """Let go of every open handle's database connections (handles reconnect if used)."""
        with self._lock:
            slots = list(self._handles.values())
        for slot in slots:
            with slot.lock:
                if slot.value is not None:
                    slot.value.close()


class _Slot(Generic[T]):
    """A value built once under its own lock, so building one never blocks building another."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: T | None = None


def _key(name: str, options: dict[str, Any] | None) -> str:
    return json.dumps([name, dict(options or {})], sort_keys=True, default=repr)
