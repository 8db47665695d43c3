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


def wait_for_recall(col: Any, progress: bool) -> None:
    """Finish a due recall measurement before the command exits, with a bar on a tty.

    A background measurement in a process that exits is lost (nothing half-written, but the
    next command would start over), so every CLI command that may make one due waits here.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="measuring recall", unit="step", dynamic_ncols=True, leave=False)

    def step(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        measured = col.recall.wait(step)
    finally:
        if bar is not None:
            bar.close()
    if measured is not None:
        click.echo(describe_recall(measured), err=True)


def describe_recall(measured: dict[str, Any]) -> str:
    """One line about a measurement, as `info` and the commands that wait print it."""
    if measured.get("exact"):
        return f"recall@10 1.0 (exact search, {measured['kind']})"
    knobs = {**measured.get("params", {}), **measured.get("pinned", {})}
    setting = ", ".join(f"{k}={v}" for k, v in knobs.items())
    pinned = f"; pinned by you: {', '.join(measured['pinned'])}" if measured.get("pinned") else ""
    filtered = ", ".join(f"{share}: {value}" for share, value in measured["filtered"].items())
    line = (
        f"recall@10 {measured['recall']:.3f} (target {measured['target']:g}; filtered "
        f"{filtered}) with {measured['kind']} {setting}{pinned}; {measured['sample']} held-out "
        f"queries at {measured['count']:,} vectors"
    )
    if not measured["met"]:
        line += f"; TARGET NOT MET, short by {measured['short_by']:.3f}: {measured['gave_way']}"
    return line
