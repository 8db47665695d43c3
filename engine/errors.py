"""The one exception hierarchy of hubsearch.

Every error a user can cause or meet derives from :class:`HubsearchError`, so a caller (or the
CLI) can catch one type and print one line. Messages name the item, the field and what to do.
"""

from __future__ import annotations


class HubsearchError(Exception):
    """Base of every error hubsearch raises on purpose."""


class PluginNotFound(HubsearchError, LookupError):
    """No encoder or index kind is registered under that name."""


class PluginLoadError(HubsearchError, ImportError):
    """A plugin is registered but importing or constructing it failed."""


class SpaceMismatch(HubsearchError):
    """Vectors from two different embedding spaces would be mixed."""


class BadInput(HubsearchError, ValueError):
    """An item, field, option or filter is malformed; the message names which one."""


class UnknownOption(BadInput):
    """An option no plugin in the chain accepts; ``key`` lets the CLI route options."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class CollectionLocked(HubsearchError):
    """Another process holds the collection's write lock past the timeout."""


class CorruptCollection(HubsearchError):
    """Files on disk disagree or are damaged; `hubsearch repair` may rebuild them."""


class CollectionNotFound(HubsearchError, LookupError):
    """No collection of that name exists in the home folder."""


class CollectionExists(HubsearchError):
    """A collection of that name already exists."""
