"""Commands that look after a collection without re-encoding: verify, repair, reindex, compact."""

from __future__ import annotations

import time
from pathlib import Path

import click

from engine.cli_common import engine_for, key_values, parse_options


@click.command()
@click.argument("name")
@click.pass_context
def verify(ctx: click.Context, name: str) -> None:
    """Check a collection's files (checksums, sizes, store vs index); exit 1 if damaged.

    \b
    hubsearch verify faq && echo healthy
    """
    problems = engine_for(ctx).verify(name)
    for problem in problems:
        click.echo(f"damaged: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{name!r} is healthy")


@click.command()
@click.argument("name")
@click.option(
    "--drop-unrecoverable",
    is_flag=True,
    help="Remove documents whose vectors can be neither restored nor re-encoded.",
)
@click.pass_context
def repair(ctx: click.Context, name: str, drop_unrecoverable: bool) -> None:
    """Rebuild a damaged collection's index (and vectors) from the store; never re-serves damage.

    Exits 1 when something is left that it cannot mend (see `verify`).

    \b
    hubsearch repair faq
    hubsearch repair faq --drop-unrecoverable
    """
    engine = engine_for(ctx)
    actions = engine.repair(name, drop_unrecoverable=drop_unrecoverable)
    for action in actions:
        click.echo(f"repaired: {action}")
    left = engine.verify(name)
    for problem in left:
        click.echo(f"damaged: {problem}", err=True)
    if left:
        raise SystemExit(1)
    click.echo(f"{name!r} is healthy" if not actions else f"{name!r} repaired")


@click.command()
@click.argument("name")
@click.option("--index", "-i", "index_kind", default=None, help="New index kind.")
@click.option(
    "--keyword",
    is_flag=True,
    help="Build the keyword index from the stored texts (collections made before it existed).",
)
@key_values("Index option, e.g. -o M=32 -o efSearch=128. Repeatable.")
@click.pass_context
def reindex(
    ctx: click.Context,
    name: str,
    index_kind: str | None,
    keyword: bool,
    options: tuple[str, ...],
) -> None:
    """Rebuild NAME's index as another kind, or its keyword index, from what is stored (no
    re-encoding).

    Searches keep running on the old index until the new one is committed.

    \b
    hubsearch reindex faq --index hnsw -o M=32
    hubsearch reindex faq --index flat
    hubsearch reindex faq --keyword
    """
    from engine.errors import BadInput

    if index_kind is None and not keyword:
        raise BadInput("reindex needs --index KIND, --keyword or both")
    if options and index_kind is None:
        raise BadInput("-o options are for the index kind: give --index KIND with them")
    col = engine_for(ctx).open(name)
    started = time.perf_counter()
    if keyword:
        m = col.build_keywords()
        click.echo(
            f"built the keyword index of {name!r} ({m.history[-1].get('rows', 0):,} texts) "
            f"in {time.perf_counter() - started:.1f} s"
        )
    if index_kind is not None:
        m = col.reindex(index_kind, parse_options(options, "-o"))
        click.echo(
            f"reindexed {name!r} as {index_kind} ({m.count:,} vectors) "
            f"in {time.perf_counter() - started:.1f} s"
        )


@click.command()
@click.argument("name")
@click.pass_context
def compact(ctx: click.Context, name: str) -> None:
    """Reclaim the disk space of deleted documents and rebuild the index.

    \b
    hubsearch compact faq
    """
    eng = engine_for(ctx)
    col = eng.open(name)
    before = _disk_bytes(col.folder)
    col.compact()
    click.echo(
        f"compacted {name!r}: {before / 2**20:.1f} MiB -> {_disk_bytes(col.folder) / 2**20:.1f} MiB"
    )


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
