"""Plugin discovery through entry points: the only global state hubsearch keeps.

Built-in encoders, index kinds and commands are registered in ``pyproject.toml`` exactly as a
third-party package registers its own, so both take the same road. Entry points are listed
lazily and each is imported on first use in its own ``try``: a plugin that fails to import is
reported by name with its error and never hides the others.
"""

from __future__ import annotations

import importlib.metadata
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.errors import PluginLoadError, PluginNotFound

ENCODERS = "hubsearch.encoders"
INDEXES = "hubsearch.indexes"
COMMANDS = "hubsearch.commands"
GROUPS = (ENCODERS, INDEXES, COMMANDS)
_KIND = {ENCODERS: "encoder", INDEXES: "index kind", COMMANDS: "command"}


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin as `hubsearch plugins` shows it."""

    group: str
    name: str
    target: str
    distribution: str
    loads: bool
    error: str | None = None


class Registry:
    """Maps plugin names to what they register: encoder and index classes, click commands.

    ``entry_points`` may be injected (tests build a registry holding only test plugins);
    by default the installed distributions are scanned once, on first lookup.
    """

    def __init__(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None):
        self._given = None if entry_points is None else list(entry_points)
        self._points: dict[str, dict[str, importlib.metadata.EntryPoint]] | None = None
        self._loaded: dict[tuple[str, str], Any] = {}
        self._errors: dict[tuple[str, str], str] = {}

    def _entry_points(self) -> dict[str, dict[str, importlib.metadata.EntryPoint]]:
        if self._points is None:
            points = (
                self._given
                if self._given is not None
                else [ep for g in GROUPS for ep in importlib.metadata.entry_points(group=g)]
            )
            table: dict[str, dict[str, importlib.metadata.EntryPoint]] = {g: {} for g in GROUPS}
            for ep in points:
                if ep.group in table:
                    # First registration wins; a shadowing duplicate would make spaces ambiguous.
                    table[ep.group].setdefault(ep.name, ep)
            self._points = table
        return self._points

    def load(self, group: str, name: str) -> Any:
        """The class registered as ``name`` in ``group``; clear errors when absent or broken."""
        key = (group, name)
        if key in self._loaded:
            return self._loaded[key]
        points = self._entry_points()[group]
        if name not in points:
            known = ", ".join(sorted(points)) or "none installed"
            raise PluginNotFound(f"unknown {_KIND[group]} {name!r} (available: {known})")
        if key in self._errors:
            raise PluginLoadError(self._errors[key])
        try:
            obj = points[name].load()
            _check_loaded(group, obj)
        except Exception as exc:  # any import failure is the plugin's, not ours
            line = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self._errors[key] = f"{_KIND[group]} {name!r} failed to load: {line}"
            raise PluginLoadError(self._errors[key]) from exc
        self._loaded[key] = obj
        return obj

    def names(self, group: str) -> list[str]:
        """Registered names in ``group``, without importing any plugin."""
        return sorted(self._entry_points()[group])

    def encoder_class(self, name: str) -> Any:
        return self.load(ENCODERS, name)

    def index_class(self, name: str) -> Any:
        return self.load(INDEXES, name)

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin, each import tried, broken ones included with their error."""
        infos = []
        for group in GROUPS:
            for name, ep in sorted(self._entry_points()[group].items()):
                dist = ep.dist
                dist_label = f"{dist.name} {dist.version}" if dist is not None else "?"
                try:
                    self.load(group, name)
                    infos.append(PluginInfo(group, name, ep.value, dist_label, True))
                except PluginLoadError as exc:
                    infos.append(PluginInfo(group, name, ep.value, dist_label, False, str(exc)))
        return infos


def _check_loaded(group: str, obj: Any) -> None:
    """A command entry point must name a click command; anything else would break the CLI."""
    if group == COMMANDS:
        import click

        if not isinstance(obj, click.Command):
            raise TypeError(f"{type(obj).__name__} is not a click command or group")


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry over installed distributions (the one piece of global state)."""
    return Registry()
