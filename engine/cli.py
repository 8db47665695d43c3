"""`hubsearch`: build, query and look after collections from the shell.

Every failure a user can cause is one line on stderr and a non-zero exit; `--json` prints
machine-readable lines for scripts. This module holds the group and the entry point; the
commands live by subject in cli_collections, cli_data, cli_upkeep and cli_plugins.
"""

from __future__ import annotations

from typing import Any

import click

from engine import (
    cli_collections,
    cli_data,
    cli_plugins,
    cli_serve,
    cli_startup,
    cli_tune,
    cli_upkeep,
)
from engine.errors import HubsearchError

EXAMPLES_HOME = "Collections live in --home, $HUBSEARCH_HOME or ~/.local/share/hubsearch."


class _Group(click.Group):
    """The built-in commands plus the plugins' own; hubsearch errors become one clean line.

    Plugin commands (entry points `hubsearch.commands`) are listed by name and imported only
    when one is shown or run: `hubsearch add` imports none of them, `hubsearch --help` imports
    each one's command module for its help line (which a plugin keeps light). A built-in name
    wins over a plugin's, and a plugin that fails to load never breaks the others.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubsearchError as exc:
            raise click.ClickException(str(exc)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *cli_plugins.plugin_command_names()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or cli_plugins.plugin_command(cmd_name)


@click.group(cls=_Group, epilog=EXAMPLES_HOME)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="HUBSEARCH_HOME",
    help="Folder holding the collections.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show TensorFlow's start-up messages and debug logs (also: HUBSEARCH_LOG=debug).",
)
@click.version_option(package_name="hubsearch")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: bool) -> None:
    """Semantic search over your knowledge base: FAQ entries, tickets, product photos.

    \b
    hubsearch create faq --encoder use-multilingual
    hubsearch add faq examples/faq.jsonl
    hubsearch search faq "Wie setze ich meine PIN zurück?" -k 3
    """
    ctx.obj = home
    cli_startup.configure(ctx, verbose)


COMMANDS = (
    cli_collections.create,
    cli_collections.info,
    cli_collections.list_,
    cli_collections.drop,
    cli_data.add,
    cli_data.search,
    cli_data.get,
    cli_data.delete,
    cli_upkeep.verify,
    cli_upkeep.repair,
    cli_upkeep.reindex,
    cli_upkeep.compact,
    cli_plugins.plugins,
    cli_plugins.export_encoder,
    cli_serve.serve,
)
for _command in COMMANDS:
    cli.add_command(_command)
cli_tune.register(cli)  # tune, answer


def main() -> None:
    cli(prog_name="hubsearch")


if __name__ == "__main__":
    main()
