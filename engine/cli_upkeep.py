"""Commands that look after a collection without re-encoding: verify, repair, reindex, compact."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from engine.cli_common import engine_for, key_values, parse_options, wait_for_recall


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
@click.option(
    "--recall",
    "target",
    type=click.FloatRange(0.5, 1.0),
    default=None,
    help="Recall@10 target (against exact search) the index is tuned to; keeps the kind "
    "unless --index is given.",
)
@key_values("Index option, e.g. -o M=32 -o efSearch=128. Repeatable.")
@click.pass_context
def reindex(
    ctx: click.Context,
    name: str,
    index_kind: str | None,
    keyword: bool,
    target: float | None,
    options: tuple[str, ...],
) -> None:
    """Rebuild NAME's index as another kind, or its keyword index, from what is stored (no
    re-encoding).

    Searches keep running on the old index until the new one is committed.

    \b
    hubsearch reindex faq --index hnsw -o M=32
    hubsearch reindex faq --index flat
    hubsearch reindex faq --keyword
    hubsearch reindex faq --recall 0.99
    """
    from engine.errors import BadInput

    if index_kind is None and not keyword and target is None:
        raise BadInput("reindex needs --index KIND, --keyword, --recall or a combination")
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
        given = parse_options(options, "-o")
        m = col.reindex(index_kind, given if target is None else {**given, "recall": target})
        click.echo(
            f"reindexed {name!r} as {index_kind} ({m.count:,} vectors) "
            f"in {time.perf_counter() - started:.1f} s"
        )
    elif target is not None:
        col.set_recall(target)
        click.echo(f"recall target of {name!r} set to {target:g}; measuring the index")
    wait_for_recall(col, sys.stderr.isatty())


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
    wait_for_recall(col, sys.stderr.isatty())
    click.echo(
        f"compacted {name!r}: {before / 2**20:.1f} MiB -> {_disk_bytes(col.folder) / 2**20:.1f} MiB"
    )


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
