"""Helpers every hubsearch command shares, built-in or from a plugin.

Plugin commands (the ``hubsearch.commands`` entry points) use them too: :func:`engine_for`
gives them the engine of the ``--home`` the user chose.
"""

from __future__ import annotations

from typing import Any

import click


def engine_for(ctx: click.Context) -> Any:
    """The engine over the home folder given to ``hubsearch --home`` (or its default)."""
    from engine.api import Engine

    return Engine(ctx.obj)


def key_values(help_text: str) -> Any:
    """The repeatable ``-o KEY=VALUE`` option every command that builds a plugin takes."""
    return click.option(
        "-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help=help_text
    )


def parse_options(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=flag)
        options[key.strip()] = value
    return options
