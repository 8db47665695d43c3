"""Opening a collection as a new process would.

``Engine.open`` hands every caller the handle the engine already holds (its index and model
stay loaded), so a test about what a fresh open finds on disk opens through a new ``Engine``.
"""

from __future__ import annotations

from engine import Engine


def reopen(engine: Engine, name: str):
    return Engine(engine.home, registry=engine.registry, lock_timeout=engine.lock_timeout).open(
        name
    )
