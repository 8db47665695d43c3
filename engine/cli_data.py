"""Commands about the documents in a collection: add, search, get, delete."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from engine.cli_common import engine_for, wait_for_recall
from engine.cli_startup import prepare_encoder
from engine.ingest import (
    Fields,
    check_unique,
    is_parquet,
    is_text_file,
    iter_rows,
    read_rows,
)


@click.command()
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
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[auto|ADDRESS]",
    help="Encode on a Ray cluster (auto: the running one; bare --ray: start a local one); "
    "this process commits. Needs hubsearch[ray].",
)
@click.option(
    "--actors", type=click.IntRange(1), default=1, show_default=True, help="With --ray: encoders."
)
@click.option(
    "--gpus-per-actor",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="With --ray: GPUs each encoder actor takes (0: one CPU each).",
)
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
    ray_address: str | None,
    actors: int,
    gpus_per_actor: float,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Add (or update, by id) documents from JSONL, CSV, text files or image folders.

    Text files: JSONL (one object per line), CSV/TSV (header row), Parquet (read a row group
    at a time, added in chunks; needs hubsearch[parquet]) or plain text (one document
    per line). Every row is checked before anything is written; a bad row stops the import with
    FILE:LINE. Images: files, folders (recursive) or globs; unreadable images are skipped and
    reported. Re-adding unchanged items costs nothing.

    \b
    hubsearch add faq kb.jsonl --id-field qid --meta-field lang --meta-field topic
    hubsearch add tickets export.csv --text-field body
    hubsearch add photos ./catalogue --sidecar catalogue.csv
    hubsearch add tickets export.parquet --id-field ticket_id --ray auto --actors 8 \\
        --gpus-per-actor 1
    """
    from engine.cli_format import show_report
    from engine.collection import AddReport

    fields = Fields(id=id_field, text=text_field, meta=meta_fields)
    if ray_address is not None:
        cluster = {"address": ray_address, "actors": actors, "gpus_per_actor": gpus_per_actor}
        _add_on_ray(ctx, name, paths, fields, sidecar, batch_size, cluster, as_json)
        return
    col = engine_for(ctx).open(name)
    prepare_encoder(col.encoder)
    if progress is None:
        progress = sys.stderr.isatty() and not as_json
    text_paths = [Path(p) for p in paths if Path(p).is_file() and is_text_file(Path(p))]
    image_args = [p for p in paths if not (Path(p).is_file() and is_text_file(Path(p)))]
    started = time.perf_counter()
    report = AddReport()
    if any(is_parquet(p) for p in text_paths):
        from engine.streamed import add_streamed

        def read() -> Any:
            return (row for path in text_paths for row in iter_rows(path, fields))

        report.merge(add_streamed(col, read, batch_size, progress))
    elif text_paths:
        from engine.streamed import add_rows

        rows = [row for path in text_paths for row in read_rows(path, fields)]
        check_unique(rows)
        report.merge(add_rows(col, rows, batch_size, progress))
    if image_args:
        report.merge(_add_images(col, image_args, sidecar, batch_size, progress))
    show_report(report, time.perf_counter() - started, as_json)
    wait_for_recall(col, progress)


def _add_on_ray(
    ctx: click.Context,
    name: str,
    paths: tuple[str, ...],
    fields: Fields,
    sidecar: str | None,
    batch_size: int | None,
    cluster: dict[str, Any],
    as_json: bool,
) -> None:
    """``add --ray``: the rows are checked here, encoded by actors, committed here; an image
    folder's images are read here, decoded and encoded by actors."""
    from engine.cli_format import show_report
    from engine.collection import AddReport
    from engine.distributed import connect

    col = engine_for(ctx).open(name)  # before starting a cluster: a wrong name fails fast
    address = cluster["address"]
    connect(None if address == "local" else address)
    started = time.perf_counter()
    report = AddReport()
    for path in paths:
        report.merge(
            col.add_dataset(
                path,
                text=fields.text,
                id=fields.id,
                metadata=list(fields.meta),
                actors=cluster["actors"],
                gpus_per_actor=cluster["gpus_per_actor"],
                batch_size=batch_size,
                sidecar=sidecar,
            )
        )
    show_report(report, time.perf_counter() - started, as_json)
    wait_for_recall(col, sys.stderr.isatty() and not as_json)


def _add_images(
    col: Any, args: list[str], sidecar: str | None, batch_size: int | None, progress: bool
) -> Any:
    from engine.image_folders import image_files, image_ids, sidecar_metadata

    files = image_files(args)
    ids = image_ids(files, args)
    metadata = sidecar_metadata(Path(sidecar), files, ids) if sidecar else None
    return col.add(
        images=files, ids=ids, metadata=metadata, batch_size=batch_size, progress=progress
    )


@click.command()
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
    "--mode",
    type=click.Choice(["hybrid", "vector", "keyword"]),
    default=None,
    help="Keywords, meaning or both (default: hybrid where the collection has a keyword index).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=None,
    help="Hybrid: weight of the vector side, 0 (keywords) to 1 (vectors); default 0.5.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per hit (per query with --queries)."
)
@click.option(
    "--min-score",
    default=None,
    metavar="auto|FLOAT",
    help="Drop hits below this similarity ('auto': the threshold `hubsearch tune` calibrated).",
)
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
    mode: str | None,
    alpha: float | None,
    as_json: bool,
    min_score: str | None,
) -> None:
    """Find the K documents closest to QUERY (or to --image), optionally filtered.

    \b
    hubsearch search faq "my card was swallowed by the ATM" -k 3
    hubsearch search faq "carte bloquée" --where '{"lang": {"$in": ["fr", "de"]}}'
    hubsearch search photos --image query.jpg --json
    hubsearch search faq --queries test.csv -k 1 --json > results.jsonl
    hubsearch search faq "ERR_CARD_502" --mode keyword
    hubsearch search faq "card declined" --where '{"$text": "XR-2200"}'
    Filters: a bare value ($eq), $ne $gt $gte $lt $lte $in $nin $exists, $and, $or,
    $text (every word of it, by keyword).
    """
    from engine.cli_format import show_hits, show_query_results
    from engine.errors import BadInput
    from engine.filters import parse_where

    filt = parse_where(where)
    if sum(x is not None for x in (query, image, queries)) != 1:
        raise BadInput("search needs exactly one of: QUERY, --image PATH, --queries FILE")
    from engine.cli_tune import min_score_value

    floor = min_score_value(min_score)
    col = engine_for(ctx).open(name)
    if mode != "keyword":  # keyword search runs no model
        prepare_encoder(col.encoder)
    how = {"where": filt, "modality": modality, "mode": mode, "alpha": alpha, "min_score": floor}
    if queries is not None:
        rows = read_rows(Path(queries), Fields(text=text_field))
        results = col.search_many([r.text for r in rows], k=k, **how)
        show_query_results(rows, results, as_json)
        return
    show_hits(col.search(query, image=image, k=k, **how), as_json)


@click.command()
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, name: str, ids: tuple[str, ...]) -> None:
    """Delete documents by id (unknown ids are ignored and counted).

    \b
    hubsearch delete faq q-17 q-18
    """
    col = engine_for(ctx).open(name)
    removed = col.delete(list(ids))
    click.echo(f"deleted {removed} of {len(ids)}")
    wait_for_recall(col, sys.stderr.isatty())


@click.command()
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

    for ext, doc in zip(ids, engine_for(ctx).open(name).get(list(ids)), strict=True):
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
