"""`hubsearch`: build, query and look after collections from the shell.

Every failure a user can cause is one line on stderr and a non-zero exit; `--json` prints
machine-readable lines for scripts.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from engine.cli_towers import towers
from engine.cli_tune import register as register_tune
from engine.errors import HubsearchError, UnknownOption
from engine.ingest import Fields, check_unique, is_text_file, read_rows, read_sidecar

EXAMPLES_HOME = "Collections live in --home, $HUBSEARCH_HOME or ~/.local/share/hubsearch."


class _Group(click.Group):
    """Turns hubsearch errors into one clean line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubsearchError as exc:
            raise click.ClickException(str(exc)) from None


def _key_values(help_text: str) -> Any:
    """The repeatable ``-o KEY=VALUE`` option every command that builds a plugin takes."""
    return click.option(
        "-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help=help_text
    )


def _parse_options(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=flag)
        options[key.strip()] = value
    return options


@click.group(cls=_Group, epilog=EXAMPLES_HOME)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="HUBSEARCH_HOME",
    help="Folder holding the collections.",
)
@click.version_option(package_name="hubsearch")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Semantic search over your knowledge base: FAQ entries, tickets, product photos.

    \b
    hubsearch create faq --encoder use-multilingual
    hubsearch add faq examples/faq.jsonl
    hubsearch search faq "Wie setze ich meine PIN zurück?" -k 3
    """
    ctx.obj = home


def _engine(ctx: click.Context) -> Any:
    from engine.api import Engine

    return Engine(ctx.obj)


@cli.command()
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


@cli.command()
@click.argument("name")
@click.option("--encoder", "-e", required=True, help="Encoder plugin, see `hubsearch plugins`.")
@click.option(
    "--index", "-i", "index_kind", default=None, help="Index kind: flat (exact), hnsw, ivfpq, auto."
)
@_key_values(
    "Encoder option (or index option: prefix with 'index.', or any key only "
    "the index knows). Repeatable."
)
@click.option(
    "--store-url",
    default=None,
    help="SQLAlchemy URL of the metadata store (default: SQLite inside the collection folder).",
)
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    encoder: str,
    index_kind: str | None,
    options: tuple[str, ...],
    store_url: str | None,
) -> None:
    """Create an empty collection NAME that embeds with ENCODER.

    \b
    hubsearch create faq --encoder use-multilingual
    hubsearch create photos --encoder efficientnet --index hnsw -o index.M=32
    hubsearch create vecs --encoder precomputed -o dim=512 -o space=my-model-v2
    """
    from engine.api import DEFAULT_INDEX

    eng = _engine(ctx)
    enc_opts, idx_opts = _route_options(
        eng, encoder, index_kind or DEFAULT_INDEX, _parse_options(options, "-o")
    )
    col = eng.create(
        name,
        encoder=encoder,
        index=index_kind or DEFAULT_INDEX,
        options=enc_opts,
        index_options=idx_opts,
        store_url=store_url,
    )
    click.echo(
        f"created {name!r}: encoder {encoder} ({col.dim}-d), "
        f"index {index_kind or DEFAULT_INDEX}, in {col.folder}"
    )


def _route_options(
    eng: Any, encoder: str, index: str, options: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Split -o options between encoder and index: explicit prefixes, else whoever knows it."""
    enc = {k[8:]: v for k, v in options.items() if k.startswith("encoder.")}
    idx = {k[6:]: v for k, v in options.items() if k.startswith("index.")}
    plain = {k: v for k, v in options.items() if not k.startswith(("encoder.", "index."))}
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
    return enc, idx


@cli.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, metavar="FILE_OR_DIR...")
@click.option(
    "--id-field",
    default=None,
    help="Field holding each row's id (default: 'id' if present, else FILE:LINE).",
)
@click.option("--text-field", default="text", show_default=True, help="Field holding the text.")
@click.option(
    "--meta-field",
    "meta_fields",
    multiple=True,
    help="Field to keep as metadata (repeatable; default: all other fields).",
)
@click.option(
    "--sidecar",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV/JSONL of image metadata keyed by file name (field 'file').",
)
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Items per model call.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    paths: tuple[str, ...],
    id_field: str | None,
    text_field: str,
    meta_fields: tuple[str, ...],
    sidecar: str | None,
    batch_size: int | None,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Add (or update, by id) documents from JSONL, CSV, text files or image folders.

    Text files: JSONL (one object per line), CSV/TSV (header row) or plain text (one document
    per line). Every row is checked before anything is written; a bad row stops the import with
    FILE:LINE. Images: files, folders (recursive) or globs; unreadable images are skipped and
    reported. Re-adding unchanged items costs nothing.

    \b
    hubsearch add faq kb.jsonl --id-field qid --meta-field lang --meta-field topic
    hubsearch add tickets export.csv --text-field body
    hubsearch add photos ./catalogue --sidecar catalogue.csv
    """
    from engine.cli_format import show_report
    from engine.collection import AddReport

    col = _engine(ctx).open(name)
    if progress is None:
        progress = sys.stderr.isatty() and not as_json
    fields = Fields(id=id_field, text=text_field, meta=meta_fields)
    text_paths = [Path(p) for p in paths if Path(p).is_file() and is_text_file(Path(p))]
    image_args = [p for p in paths if not (Path(p).is_file() and is_text_file(Path(p)))]
    started = time.perf_counter()
    report = AddReport()
    if text_paths:
        rows = [row for path in text_paths for row in read_rows(path, fields)]
        check_unique(rows)
        report.merge(
            col.add(
                texts=[r.text for r in rows],
                ids=[r.id for r in rows],
                metadata=[r.metadata for r in rows],
                batch_size=batch_size,
                progress=progress,
            )
        )
    if image_args:
        report.merge(_add_images(col, image_args, sidecar, batch_size, progress))
    show_report(report, time.perf_counter() - started, as_json)


def _add_images(
    col: Any, args: list[str], sidecar: str | None, batch_size: int | None, progress: bool
) -> Any:
    from engine.errors import BadInput
    from engine.images import expand_image_paths

    files = expand_image_paths(args)
    if not files:
        raise BadInput(f"no image files found in {', '.join(args)}")
    ids = _image_ids(files, args)
    metadata = _sidecar_metadata(Path(sidecar), files, ids) if sidecar else None
    return col.add(
        images=files, ids=ids, metadata=metadata, batch_size=batch_size, progress=progress
    )


def _sidecar_metadata(sidecar: Path, files: list[Path], ids: list[str]) -> list[dict[str, Any]]:
    """Each image's sidecar row, keyed by its id, its path from the sidecar, or its file name."""
    table = read_sidecar(sidecar, "file")
    root = sidecar.resolve().parent
    out = []
    for ext, f in zip(ids, files, strict=True):
        resolved = f.resolve()
        relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None
        keys = [ext, relative, f.name]
        out.append(next((table[k] for k in keys if k in table), {}))
    return out


def _image_ids(files: list[Path], args: list[str]) -> list[str]:
    """An image's id is its path relative to the folder it was found in (stable if moved)."""
    roots = [Path(a).resolve() for a in args if Path(a).is_dir()]
    ids = []
    for f in files:
        resolved = f.resolve()
        root = next((r for r in roots if resolved.is_relative_to(r)), None)
        ids.append(resolved.relative_to(root).as_posix() if root else f.name)
    return ids


@cli.command()
@click.argument("name")
@click.argument("query", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="Search by an example image.")
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False),
    help="Search every row of a JSONL/CSV/text file (batched); prints one result "
    "per query, with the query row's own fields.",
)
@click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="With --queries: the field holding the query text.",
)
@click.option(
    "-k", "k", type=click.IntRange(1, 10_000), default=5, show_default=True, help="Number of hits."
)
@click.option(
    "--where",
    default=None,
    metavar="JSON",
    help='Metadata filter, e.g. \'{"lang": "de", "year": {"$gte": 2020}}\'.',
)
@click.option(
    "--modality",
    type=click.Choice(["text", "image"]),
    default=None,
    help="Only hits of this kind (collections holding texts and images).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per hit (per query with --queries)."
)
@click.option("--min-score", default=None, metavar="auto|FLOAT", help="Drop hits below this "
              "similarity ('auto': the threshold `hubsearch tune` calibrated).")
@click.pass_context
def search(
    ctx: click.Context,
    name: str,
    query: str | None,
    image: str | None,
    queries: str | None,
    text_field: str,
    k: int,
    where: str | None,
    modality: str | None,
    as_json: bool,
    min_score: str | None,
) -> None:
    """Find the K documents closest to QUERY (or to --image), optionally filtered.

    \b
    hubsearch search faq "my card was swallowed by the ATM" -k 3
    hubsearch search faq "carte bloquée" --where '{"lang": {"$in": ["fr", "de"]}}'
    hubsearch search photos --image query.jpg --json
    hubsearch search faq --queries test.csv -k 1 --json > results.jsonl
    Filters: a bare value ($eq), $ne $gt $gte $lt $lte $in $nin $exists, $and, $or.
    """
    from engine.cli_format import show_hits, show_query_results
    from engine.errors import BadInput
    from engine.filters import parse_where

    filt = parse_where(where)
    if sum(x is not None for x in (query, image, queries)) != 1:
        raise BadInput("search needs exactly one of: QUERY, --image PATH, --queries FILE")
    from engine.cli_tune import min_score_value

    floor = min_score_value(min_score)
    col = _engine(ctx).open(name)
    if queries is not None:
        rows = read_rows(Path(queries), Fields(text=text_field))
        results = col.search_many(
            [r.text for r in rows], k=k, where=filt, modality=modality, min_score=floor
        )
        show_query_results(rows, results, as_json)
        return
    show_hits(
        col.search(query, image=image, k=k, where=filt, modality=modality, min_score=floor),
        as_json,
    )


@cli.command()
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, name: str, ids: tuple[str, ...]) -> None:
    """Delete documents by id (unknown ids are ignored and counted).

    \b
    hubsearch delete faq q-17 q-18
    """
    removed = _engine(ctx).open(name).delete(list(ids))
    click.echo(f"deleted {removed} of {len(ids)}")


@cli.command()
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document.")
@click.pass_context
def get(ctx: click.Context, name: str, ids: tuple[str, ...], as_json: bool) -> None:
    """Show stored documents by id.

    \b
    hubsearch get faq q-17
    """
    from engine.cli_format import emit_json

    for ext, doc in zip(ids, _engine(ctx).open(name).get(list(ids)), strict=True):
        if as_json:
            emit_json(
                None
                if doc is None
                else {"id": doc.id, "content": doc.content, "metadata": doc.metadata}
            )
        else:
            click.echo(
                f"{ext}: not found" if doc is None else f"{doc.id}: {doc.content}  {doc.metadata}"
            )


@cli.command()
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

    eng = _engine(ctx)
    manifest = eng.info(name)
    show_info(manifest_summary(manifest, eng.home / name, eng.external_sources(name)), as_json)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per collection.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the collections in the home folder.

    \b
    hubsearch list
    hubsearch --home /srv/search list --json
    """
    from engine.cli_format import emit_json

    eng = _engine(ctx)
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


@cli.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def drop(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a collection and all its files (waits for a running writer first).

    \b
    hubsearch drop old-faq --yes
    """
    eng = _engine(ctx)
    eng.info(name)
    if not yes and sys.stdin.isatty():
        click.confirm(f"drop collection {name!r}?", abort=True)
    eng.drop(name)
    click.echo(f"dropped {name!r}")


@cli.command()
@click.argument("name")
@click.option("--index", "-i", "index_kind", required=True, help="New index kind.")
@_key_values("Index option, e.g. -o M=32 -o efSearch=128. Repeatable.")
@click.pass_context
def reindex(ctx: click.Context, name: str, index_kind: str, options: tuple[str, ...]) -> None:
    """Rebuild NAME's index as another kind, from the stored vectors (no re-encoding).

    Searches keep running on the old index until the new one is committed.

    \b
    hubsearch reindex faq --index hnsw -o M=32
    hubsearch reindex faq --index flat
    """
    col = _engine(ctx).open(name)
    started = time.perf_counter()
    m = col.reindex(index_kind, _parse_options(options, "-o"))
    click.echo(
        f"reindexed {name!r} as {index_kind} ({m.count:,} vectors) "
        f"in {time.perf_counter() - started:.1f} s"
    )


@cli.command()
@click.argument("name")
@click.pass_context
def compact(ctx: click.Context, name: str) -> None:
    """Reclaim the disk space of deleted documents and rebuild the index.

    \b
    hubsearch compact faq
    """
    eng = _engine(ctx)
    col = eng.open(name)
    before = _disk_bytes(col.folder)
    col.compact()
    click.echo(
        f"compacted {name!r}: {before / 2**20:.1f} MiB -> {_disk_bytes(col.folder) / 2**20:.1f} MiB"
    )


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@cli.command()
@click.argument("name")
@click.pass_context
def verify(ctx: click.Context, name: str) -> None:
    """Check a collection's files (checksums, sizes, store vs index); exit 1 if damaged.

    \b
    hubsearch verify faq && echo healthy
    """
    problems = _engine(ctx).verify(name)
    for problem in problems:
        click.echo(f"damaged: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{name!r} is healthy")


@cli.command()
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
    """
    engine = _engine(ctx)
    actions = engine.repair(name, drop_unrecoverable=drop_unrecoverable)
    for action in actions:
        click.echo(f"repaired: {action}")
    left = engine.verify(name)
    for problem in left:
        click.echo(f"damaged: {problem}", err=True)
    if left:
        raise SystemExit(1)
    click.echo(f"{name!r} is healthy" if not actions else f"{name!r} repaired")


@cli.command(name="export-encoder")
@click.argument("encoder")
@click.argument("directory", type=click.Path(file_okay=False))
@_key_values("Encoder option. Repeatable.")
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

    enc = _engine(ctx).build_encoder(encoder, _parse_options(options, "-o"))
    if not hasattr(enc, "export"):
        raise BadInput(f"encoder {encoder!r} cannot be exported as a SavedModel")
    enc.export(Path(directory))
    click.echo(f"exported {encoder} to {directory}")


cli.add_command(towers)
register_tune(cli)  # tune, answer


def main() -> None:
    # TensorFlow's C++ start-up chatter would drown the one-line output users script against.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="hubsearch")


if __name__ == "__main__":
    main()
