"""Commands about plugins themselves: list them, export an encoder."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli_common import engine_for, key_values, parse_options


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
def plugins(as_json: bool) -> None:
    """List encoders and index kinds, their entry points, and whether each loads.

    A plugin that fails to import is shown as BROKEN with its error; the others still work.

    \b
    hubsearch plugins
    hubsearch plugins --json | jq 'select(.loads | not)'
    """
    from engine.cli_format import show_plugins
    from engine.registry import default_registry

    show_plugins(default_registry().describe(), as_json)


@click.command(name="export-encoder")
@click.argument("encoder")
@click.argument("directory", type=click.Path(file_okay=False))
@key_values("Encoder option. Repeatable.")
@click.pass_context
def export_encoder(
    ctx: click.Context, encoder: str, directory: str, options: tuple[str, ...]
) -> None:
    """Write ENCODER as a TensorFlow SavedModel that anyone can load with TF Hub.

    \b
    hubsearch export-encoder use-multilingual ./usem3-savedmodel
    python -c "import tensorflow_hub as hub; m = hub.load('./usem3-savedmodel')"
    """
    from engine.errors import BadInput

    enc = engine_for(ctx).build_encoder(encoder, parse_options(options, "-o"))
    if not hasattr(enc, "export"):
        raise BadInput(f"encoder {encoder!r} cannot be exported as a SavedModel")
    enc.export(Path(directory))
    click.echo(f"exported {encoder} to {directory}")
