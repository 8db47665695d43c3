"""Plugins on the command line: their own commands, listing them, exporting an encoder.

A plugin adds commands through the `hubsearch.commands` entry points (a click command or group),
the same road encoders and index kinds take. They are found by name without importing anything,
and one that fails to load becomes a stand-in that says why, so it never breaks the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import click

from engine.cli_common import engine_for, key_values, parse_options
from engine.cli_startup import prepare_encoder
from engine.errors import PluginLoadError
from engine.registry import COMMANDS, default_registry


def plugin_command_names() -> list[str]:
    return default_registry().names(COMMANDS)


def plugin_command(name: str) -> click.Command | None:
    """The command a plugin registers as ``name`` (imported now), a broken stand-in, or None."""
    registry = default_registry()
    if name not in registry.names(COMMANDS):
        return None
    try:
        command = registry.load(COMMANDS, name)
    except PluginLoadError as exc:
        return _broken_command(name, str(exc))
    if command.name != name:  # usage lines show the name the user typed
        command = copy.copy(command)
        command.name = name
    return command


def _broken_command(name: str, error: str) -> click.Command:
    def fail(args: tuple[str, ...]) -> None:
        raise PluginLoadError(error)

    return click.Command(
        name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1)],
        help=f"BROKEN: {error} (see `hubsearch plugins`)",
        context_settings={"ignore_unknown_options": True},
        add_help_option=False,
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List encoders, index kinds and plugin commands, their entry points, and whether each loads.

    A plugin that fails to import is shown as BROKEN with its error; the others still work.

    \b
    hubsearch plugins
    hubsearch plugins --json | jq 'select(.loads | not)'
    """
    from engine.cli_format import show_plugins

    builtin = getattr(ctx.find_root().command, "commands", {})
    infos = [
        dataclasses.replace(
            info,
            loads=False,
            error=f"command {info.name!r} is shadowed by the built-in command of that name",
        )
        if info.group == COMMANDS and info.name in builtin
        else info
        for info in default_registry().describe()
    ]
    show_plugins(infos, as_json)


@click.command(name="export-encoder")
@click.argument("target", nargs=-1, metavar="[ENCODER] DIRECTORY")
@click.option(
    "--collection",
    default=None,
    help="Export this collection's query path instead: its encoder as tuned, and its head.",
)
@key_values("Encoder option. Repeatable.")
@click.pass_context
def export_encoder(
    ctx: click.Context, target: tuple[str, ...], collection: str | None, options: tuple[str, ...]
) -> None:
    """Write ENCODER (or a tuned collection's text path) as a TensorFlow SavedModel.

    \b
    hubsearch export-encoder use-multilingual ./usem3-savedmodel
    hubsearch export-encoder --collection faq ./faq-encoder
    python -c "import tensorflow_text, tensorflow_hub as hub; m = hub.KerasLayer('./faq-encoder')"
    """
    from engine.errors import BadInput

    if collection is not None:
        if len(target) != 1 or options:
            raise BadInput("export-encoder --collection NAME takes one DIRECTORY and no -o")
        from engine.tune.export import export_text_path

        col = engine_for(ctx).open(collection)
        prepare_encoder(col.encoder)
        export_text_path(col, Path(target[0]))
        click.echo(f"exported the text path of collection {collection} to {target[0]}")
        return
    if len(target) != 2:
        raise BadInput("export-encoder takes ENCODER DIRECTORY (or --collection NAME DIRECTORY)")
    encoder, directory = target
    enc = engine_for(ctx).build_encoder(encoder, parse_options(options, "-o"))
    prepare_encoder(enc)
    if not hasattr(enc, "export"):
        raise BadInput(f"encoder {encoder!r} cannot be exported as a SavedModel")
    enc.export(Path(directory))
    click.echo(f"exported {encoder} to {directory}")
