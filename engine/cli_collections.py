"""Commands about whole collections: create, info, list, drop."""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.cli_common import engine_for, key_values, parse_options
from engine.cli_startup import tensorflow_quietly
from engine.errors import UnknownOption


@click.command()
@click.argument("name")
@click.option("--encoder", "-e", required=True, help="Encoder plugin, see `hubsearch plugins`.")
@click.option(
    "--index", "-i", "index_kind", default=None, help="Index kind: flat (exact), hnsw, ivfpq, auto."
)
@key_values(
    "Encoder option (or index option: prefix with 'index.', or any key only "
    "the index knows). Repeatable."
)
@click.option(
    "--store-url",
    default=None,
    help="SQLAlchemy URL of the metadata store (default: SQLite inside the collection folder).",
)
@click.option(
    "--keyword/--no-keyword",
    default=None,
    help="Keep a keyword index for hybrid search (default: yes for text encoders on SQLite).",
)
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    encoder: str,
    index_kind: str | None,
    options: tuple[str, ...],
    store_url: str | None,
    keyword: bool | None,
) -> None:
    """Create an empty collection NAME that embeds with ENCODER.

    \b
    hubsearch create faq --encoder use-multilingual
    hubsearch create photos --encoder efficientnet --index hnsw -o index.M=32
    hubsearch create vecs --encoder precomputed -o dim=512 -o space=my-model-v2
    """
    from engine.api import DEFAULT_INDEX

    eng = engine_for(ctx)
    with tensorflow_quietly():  # an encoder may load its model to learn its width
        enc_opts, idx_opts = _route_options(
            eng, encoder, index_kind or DEFAULT_INDEX, parse_options(options, "-o")
        )
        col = eng.create(
            name,
            encoder=encoder,
            index=index_kind or DEFAULT_INDEX,
            options=enc_opts,
            index_options=idx_opts,
            store_url=store_url,
            keyword=keyword,
        )
    click.echo(
        f"created {name!r}: encoder {encoder} ({col.dim}-d), "
        f"index {index_kind or DEFAULT_INDEX}, in {col.folder}"
    )


def _route_options(
    eng: Any, encoder: str, index: str, options: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Split -o options between encoder and index: explicit prefixes, else whoever knows it."""
    from engine.recall import split_options

    enc = {k[8:]: v for k, v in options.items() if k.startswith("encoder.")}
    idx = {k[6:]: v for k, v in options.items() if k.startswith("index.")}
    plain = {k: v for k, v in options.items() if not k.startswith(("encoder.", "index."))}
    plain, promise = split_options(plain)  # `-o recall=0.98`: the engine's, not the index's
    idx, promise_idx = split_options(idx)
    promise.update(promise_idx)
    enc.update(plain)
    while True:
        try:
            encoder_obj = eng.build_encoder(encoder, enc)
            break
        except UnknownOption as exc:
            if exc.key not in plain:
                raise
            idx[exc.key] = enc.pop(exc.key)
    try:
        eng.registry.index_class(index)(encoder_obj.dim, **idx)
    except UnknownOption as exc:
        raise UnknownOption(
            f"option {exc.key!r} is known to neither encoder {encoder!r} nor index {index!r}",
            exc.key,
        ) from None
    return enc, {**idx, **promise}


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def info(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a collection's size, encoder, fingerprint, index and disk use.

    \b
    hubsearch info faq
    hubsearch info faq --json | jq .fingerprint
    """
    from engine.cli_format import manifest_summary, show_info

    eng = engine_for(ctx)
    manifest = eng.info(name)
    keyword = eng.keyword_stats(name) if manifest.keyword is not None else None
    show_info(
        manifest_summary(manifest, eng.home / name, eng.external_sources(name), keyword),
        as_json,
    )


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per collection.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the collections in the home folder.

    \b
    hubsearch list
    hubsearch --home /srv/search list --json
    """
    from engine.cli_format import emit_json

    eng = engine_for(ctx)
    for name in eng.list():
        m = eng.info(name)
        if as_json:
            emit_json(
                {
                    "name": name,
                    "count": m.count,
                    "encoder": m.encoder["name"],
                    "index": m.index["kind"],
                }
            )
        else:
            click.echo(f"{name:<24} {m.count:>10,} docs  {m.encoder['name']:<18} {m.index['kind']}")


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def drop(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a collection and all its files (waits for a running writer first).

    \b
    hubsearch drop old-faq --yes
    """
    eng = engine_for(ctx)
    eng.info(name)
    if not yes and sys.stdin.isatty():
        click.confirm(f"drop collection {name!r}?", abort=True)
    eng.drop(name)
    click.echo(f"dropped {name!r}")
