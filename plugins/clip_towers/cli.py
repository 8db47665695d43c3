"""`hubsearch towers`: train text and image towers on your own pairs, and measure them.

A plugin command, registered under the `hubsearch.commands` entry points exactly as a third
party registers its own. This module stays light (click only): `hubsearch --help` imports it for
the help line, so training code and TensorFlow are imported only inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.cli_startup import start_tensorflow


@click.group()
def towers() -> None:
    """Cross-modal towers for the clip-towers encoder: train them from image-caption pairs.

    PAIRS.jsonl holds one {"image": "photos/1.jpg", "text": "a caption"} per line, image
    paths relative to the file. Use the towers with `hubsearch create NAME --encoder clip-towers
    -o towers=DIR`; the collection then takes texts and images, and searches both.

    \b
    hubsearch towers train pairs.jsonl --out shop-towers
    hubsearch towers eval shop-towers held-out.jsonl
    """


def _fields(function: Any) -> Any:
    for option in reversed((
        click.option("--image-field", default="image", show_default=True,
                     help="Field holding the image path."),
        click.option("--text-field", default="text", show_default=True,
                     help="Field holding the caption."),
        click.option("--group-field", default=None,
                     help="Pairs with equal values here match each other (default: equal "
                          "captions)."),
    )):
        function = option(function)
    return function


def _report_skip(skipped: Any) -> None:
    """One stderr line per skipped pair, also with --json (which keeps stdout parseable)."""
    click.echo(skipped.line(), err=True)


@towers.command()
@click.argument("pairs", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="New folder for the towers (text/, image/, towers.json).")
@_fields
@click.option("--dim", default=256, show_default=True, help="Width of the shared space.")
@click.option("--epochs", default=20, show_default=True,
              help="Most epochs of stage 1 (heads on frozen backbones).")
@click.option("--fine-tune-epochs", default=0, show_default=True,
              help="Epochs of stage 2, which also trains the top image blocks.")
@click.option("--val-fraction", default=0.1, show_default=True,
              help="Share of images held out for validation and early stopping.")
@click.option("--batch-size", default=128, show_default=True,
              help="Pairs per contrastive batch.")
@click.option("--image-size", default=224, show_default=True, help="Image tower input side.")
@click.option("--learning-rate", default=1e-3, show_default=True, help="Stage 1 rate.")
@click.option("--patience", default=3, show_default=True,
              help="Stop after this many epochs without better validation recall.")
@click.option("--seed", default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Backbone feature cache [default: $HUBSEARCH_CACHE or ~/.cache/hubsearch].")
@click.option("--logdir", type=click.Path(file_okay=False),
              help="TensorBoard logs [default: OUT/logs].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def train(pairs: str, out: str, image_field: str, text_field: str, group_field: str | None,
          dim: int, epochs: int, fine_tune_epochs: int, val_fraction: float, batch_size: int,
          image_size: int, learning_rate: float, patience: int, seed: int,
          cache_dir: str | None, logdir: str | None, no_progress: bool, as_json: bool) -> None:
    """Train towers on PAIRS.jsonl: frozen backbones, contrastive heads, optional fine-tuning.

    Backbone features are computed once and cached, so each epoch costs only the heads and a
    rerun skips the backbones. Unreadable images are reported and skipped.

    \b
    hubsearch towers train pairs.jsonl --out towers --epochs 30 --fine-tune-epochs 3
    tensorboard --logdir towers/logs
    """
    start_tensorflow()
    from plugins.clip_towers.fit import FitConfig
    from plugins.clip_towers.train import TrainConfig, train_towers

    config = TrainConfig(
        dim=dim, image_size=image_size, val_fraction=val_fraction, image_field=image_field,
        text_field=text_field, group_field=group_field,
        cache_dir=Path(cache_dir) if cache_dir else None,
        logdir=Path(logdir) if logdir else None, progress=not no_progress,
    )
    fit = FitConfig(epochs=epochs, fine_tune_epochs=fine_tune_epochs, batch_size=batch_size,
                    learning_rate=learning_rate, patience=patience, seed=seed)
    report = train_towers(pairs, out, config, fit, on_skip=_report_skip)
    if as_json:
        click.echo(json.dumps(report.to_json(), default=str))
        return
    best = report.best.get("val_recall@1")
    click.echo(f"towers written to {report.out}")
    click.echo(f"pairs: {report.used} used ({report.train_pairs} train, {report.val_pairs} "
               f"validation), {len(report.skipped)} skipped")
    click.echo(f"image features: {report.images_computed} computed, {report.images_cached} "
               f"from cache ({report.feature_seconds:.1f} s); {len(report.history)} epochs, "
               f"{report.epoch_seconds:.2f} s per heads epoch")
    if best:
        click.echo(f"best validation recall@1 (epoch {report.best['epoch']}): text->image "
                   f"{best['text_to_image']:.3f}, image->text {best['image_to_text']:.3f}")


@towers.command("eval")
@click.argument("towers_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("pairs", type=click.Path(dir_okay=False))
@_fields
@click.option("--batch-size", default=None, type=int, help="Items per tower call.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def evaluate(towers_dir: str, pairs: str, image_field: str, text_field: str,
             group_field: str | None, batch_size: int | None, as_json: bool) -> None:
    """Recall@1/5/10 of the towers in DIR on PAIRS.jsonl, text->image and image->text.

    \b
    hubsearch towers eval shop-towers held-out.jsonl
    hubsearch towers eval shop-towers held-out.de.jsonl --json
    """
    start_tensorflow()
    from plugins.clip_towers import ClipTowersEncoder
    from plugins.clip_towers.evaluate import evaluate_towers

    options: dict[str, Any] = {"towers": towers_dir}
    if batch_size:
        options["batch_size"] = batch_size
    report = evaluate_towers(ClipTowersEncoder(**options), pairs, image_field=image_field,
                             text_field=text_field, group_field=group_field,
                             on_skip=_report_skip)
    if as_json:
        click.echo(json.dumps(report.to_json(), default=str))
        return
    click.echo(f"pairs: {report.used} used, {len(report.skipped)} skipped; "
               f"{report.images} distinct images")
    ks = sorted(next(iter(report.recall.values())))
    click.echo(f"{'recall':<13}" + "".join(f"{'@' + str(k):>8}" for k in ks))
    for way, label in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        click.echo(f"{label:<13}" + "".join(f"{report.recall[way][k]:>8.3f}" for k in ks))
