"""The test plugin's commands, registered under `hubsearch.commands` as a third party would.

Kept light the way a plugin's command module should be: `hubsearch --help` imports it for the
help line, so the encoder module (`hubsearch_fake`, standing in for a heavy model) is imported
only inside the commands.
"""

from __future__ import annotations

import json

import click

from engine.cli_common import engine_for
from engine.cli_startup import start_tensorflow

#: Registered as `not-a-command`: an entry point naming something that is not a click command.
VERSION = "1.0"


@click.group()
def fake() -> None:
    """Tools of the fake-hash encoder (a third-party plugin's commands).

    \b
    hubsearch fake embed "reset my pin" --dim 8
    hubsearch fake count faq
    """


@fake.command()
@click.argument("text")
@click.option("--dim", default=8, show_default=True, help="Vector width.")
def embed(text: str, dim: int) -> None:
    """Print TEXT's fake-hash vector as a JSON list."""
    from hubsearch_fake import HashEncoder

    vector = HashEncoder(dim=dim).encode([text], "text")[0]
    click.echo(json.dumps([round(float(x), 6) for x in vector]))


@fake.command()
@click.argument("name")
@click.pass_context
def count(ctx: click.Context, name: str) -> None:
    """Print how many documents collection NAME holds (in the --home the user chose)."""
    click.echo(engine_for(ctx).open(name).count())


@fake.command("tf-version")
def tf_version() -> None:
    """Print TensorFlow's version, starting it quietly the way a plugin command should."""
    start_tensorflow()
    import tensorflow as tf

    click.echo(tf.__version__)
