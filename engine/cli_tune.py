"""`hubsearch tune` and `hubsearch answer`: learn from your own labels, and know when to abstain.

A module of its own because tuning pulls in TensorFlow (imported only inside the command) and is
a workflow, not a query.
"""

from __future__ import annotations

import json
from typing import Any

import click


def _engine(ctx: click.Context) -> Any:
    from engine.api import Engine

    return Engine(ctx.find_root().obj)


def min_score_value(value: str | None) -> float | str | None:
    """``--min-score``: "auto" (the tuned threshold) or a similarity."""
    from engine.errors import BadInput

    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise BadInput(f"--min-score must be 'auto' or a number, got {value!r}") from None


@click.command()
@click.argument("name")
@click.option("--label-field", default=None, help="Metadata field whose values are the labels.")
@click.option(
    "--pairs",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSONL of (query, document id) pairs, e.g. a chat log.",
)
@click.option("--query-field", default="query", show_default=True, help="With --pairs.")
@click.option("--id-field", default="id", show_default=True, help="With --pairs.")
@click.option(
    "--negatives",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Texts that must find no answer (JSONL with --query-field, or one per line).",
)
@click.option(
    "--full",
    is_flag=True,
    help="Stage 2 too: fine-tune the top of the encoder, then re-encode the collection.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Makes a run repeatable.")
@click.option("--dry-run", is_flag=True, help="Train and report; commit nothing.")
@click.option("--force", is_flag=True, help="Commit even if validation does not improve.")
@click.option("--reset", is_flag=True, help="Go back to the base encoder (untune).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.pass_context
def tune(
    ctx: click.Context,
    name: str,
    label_field: str | None,
    pairs: str | None,
    query_field: str,
    id_field: str,
    negatives: str | None,
    full: bool,
    seed: int,
    dry_run: bool,
    force: bool,
    reset: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Train a head on NAME's own labelled data; commit it if validation improves.

    \b
    hubsearch tune faq --label-field intent
    hubsearch tune faq --pairs log.jsonl --query-field question --id-field doc
    hubsearch tune faq --label-field intent --negatives out-of-scope.txt --dry-run
    hubsearch tune faq --label-field intent --full
    hubsearch tune faq --reset
    Then: hubsearch search faq "..." --min-score auto, or hubsearch answer faq "...".
    """
    from engine.errors import BadInput

    col = _engine(ctx).open(name)
    if reset:
        if label_field or pairs or full:
            raise BadInput("--reset takes no --label-field, --pairs or --full")
        before = col.manifest.generation
        m = col.untune()
        done = m.generation != before
        if as_json:
            click.echo(json.dumps({"untuned": done, "generation": m.generation}))
        else:
            click.echo(f"{name}: back to the base encoder" if done else f"{name} is not tuned")
        return
    import sys

    report = col.tune(
        label_field=label_field,
        pairs=pairs,
        negatives=negatives,
        query_field=query_field,
        id_field=id_field,
        seed=seed,
        dry_run=dry_run,
        force=force,
        full=full,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=float))
        return
    show_tune_report(report)


def show_tune_report(report: Any) -> None:
    rows = [
        ("kNN@1", "knn@1"),
        ("recall@5", "recall@5"),
        ("MRR", "mrr"),
        ("threshold", "threshold"),
        ("answered right", "answered_right"),
        ("answered wrong", "answered_wrong"),
        ("negatives rejected", "negatives_rejected"),
    ]
    click.echo(
        f"{report.mode}: {report.train_examples} to learn from, {report.val_examples} to "
        f"validate on, {report.negatives} negatives; best epoch {report.best_epoch} of "
        f"{report.epochs}, {report.seconds:.1f} s"
    )
    stage1 = report.stage1
    if stage1 is None:
        click.echo(f"{'validation':<20}{'base':>10}{'tuned':>10}")
    else:
        click.echo(f"{'validation':<20}{'base':>10}{'head':>10}{'--full':>10}")
    for label, key in rows:
        if key in report.before:
            middle = "" if stage1 is None else f"{stage1[key]:>10.4f}"
            click.echo(
                f"{label:<20}{report.before[key]:>10.4f}{middle}{report.after[key]:>10.4f}"
            )
    click.echo(report.reason)


@click.command()
@click.argument("name")
@click.argument("query")
@click.option(
    "--min-score",
    default="auto",
    show_default=True,
    metavar="auto|FLOAT",
    help="Answer only above this similarity ('auto': the threshold tune calibrated).",
)
@click.option("--where", default=None, metavar="JSON", help="Metadata filter, as for search.")
@click.option("--json", "as_json", is_flag=True, help="The answer as JSON (null for none).")
@click.pass_context
def answer(
    ctx: click.Context, name: str, query: str, min_score: str, where: str | None, as_json: bool
) -> None:
    """The best answer to QUERY, or "no answer" when nothing clears the threshold.

    \b
    hubsearch answer faq "my card got eaten by the ATM"
    """
    from engine.cli_format import hit_json, short
    from engine.filters import parse_where

    col = _engine(ctx).open(name)
    hit = col.answer(query, where=parse_where(where), min_score=min_score_value(min_score))
    if as_json:
        click.echo(json.dumps(None if hit is None else hit_json(1, hit), ensure_ascii=False))
    elif hit is None:
        click.echo("no answer")
    else:
        click.echo(f"{hit.similarity:.4f}  {hit.id}  {short(hit.content)}")


def register(group: click.Group) -> None:
    group.add_command(tune)
    group.add_command(answer)
