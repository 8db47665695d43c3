"""How the CLI shows things: one place for human tables and `--json` lines."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=True))


def short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def hit_json(rank: int, hit: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "id": hit.id,
        "score": round(hit.score, 6),
        "content": hit.content,
        "metadata": hit.metadata,
        "modality": hit.modality,
        "similarity": _rounded(getattr(hit, "similarity", None)),
        "keyword_score": _rounded(getattr(hit, "keyword_score", None)),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def show_hits(hits: list[Any], as_json: bool) -> None:
    if as_json:
        for rank, hit in enumerate(hits, 1):
            emit_json(hit_json(rank, hit))
        return
    if not hits:
        click.echo("no hits")
    for rank, hit in enumerate(hits, 1):
        meta = f"  {json.dumps(hit.metadata, ensure_ascii=False)}" if hit.metadata else ""
        click.echo(f"{rank:>3}. {hit.score:.4f}  {hit.id}  {short(hit.content)}{meta}")


def show_query_results(rows: list[Any], results: list[list[Any]], as_json: bool) -> None:
    for row, hits in zip(rows, results, strict=True):
        if as_json:
            emit_json(
                {
                    "query": row.text,
                    "query_id": row.id,
                    "query_metadata": row.metadata,
                    "hits": [hit_json(r, h) for r, h in enumerate(hits, 1)],
                }
            )
        else:
            click.echo(f"{row.where}: {short(row.text)}")
            show_hits(hits, False)


def show_report(report: Any, seconds: float, as_json: bool) -> None:
    done = report.added + report.updated
    rate = done / seconds if seconds > 0 else 0.0
    if as_json:
        emit_json(
            {
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "skipped": len(report.skipped),
                "skipped_items": [{"item": i, "reason": r} for i, r in report.skipped],
                "seconds": round(seconds, 3),
                "items_per_second": round(rate, 1),
            }
        )
        return
    for item, reason in report.skipped:
        click.echo(f"skipped {item}: {reason}", err=True)
    click.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {len(report.skipped)} in {seconds:.1f} s ({rate:,.0f} items/s)"
    )


def show_plugins(infos: list[Any], as_json: bool) -> None:
    if as_json:
        for info in infos:
            emit_json(
                {
                    "group": info.group,
                    "name": info.name,
                    "entry_point": info.target,
                    "distribution": info.distribution,
                    "loads": info.loads,
                    "error": info.error,
                }
            )
        return
    for group in sorted({i.group for i in infos}):
        click.echo(f"{group}:")
        for info in (i for i in infos if i.group == group):
            status = "ok" if info.loads else f"BROKEN: {info.error}"
            click.echo(f"  {info.name:<18} {info.target:<45} [{info.distribution}] {status}")


def manifest_summary(
    manifest: Any,
    folder: Any,
    external: list[dict[str, str]] | None = None,
    keyword: dict[str, Any] | None = None,
) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "name": manifest.name,
        "count": manifest.count,
        "dim": manifest.dim,
        "encoder": manifest.encoder["name"],
        "encoder_options": manifest.encoder["options"],
        "fingerprint": manifest.space,
        "index": manifest.index,
        "tune": manifest.tune,
        "generation": manifest.generation,
        "snapshot_generation": manifest.snapshot_generation,
        "disk_bytes": size,
        "path": str(folder),
        "history": list(manifest.history),
        "external": external or [],
        "keyword": keyword,
        "recall": recall_summary(manifest),
    }


def recall_summary(manifest: Any) -> dict[str, Any]:
    """The recall promise: settings with defaults, the last measurement, and whether it is due."""
    from engine import recall

    return {
        **recall.config(manifest.recall),
        "measured": (manifest.recall or {}).get("measured"),
        "due": recall.due(manifest),
        "exact": recall.exact(manifest),
    }


def show_info(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(summary)
        return
    for key in (
        "name",
        "count",
        "dim",
        "encoder",
        "encoder_options",
        "index",
        "generation",
        "disk_bytes",
        "path",
    ):
        click.echo(f"{key:>16}: {summary[key]}")
    kw = summary.get("keyword")
    click.echo(
        f"{'keyword index':>16}: "
        + (
            f"{kw['rows']:,} texts, {kw['bytes'] / 2**20:.1f} MiB (hybrid search by default)"
            if kw
            else "none (searches by vector; `hubsearch reindex NAME --keyword` builds one)"
        )
    )
    promise = summary.get("recall")
    if promise is not None:
        from engine.cli_common import describe_recall

        measured = promise["measured"]
        if promise["exact"]:
            line = "recall@10 1.0 (the index in force searches exactly)"
        else:
            line = describe_recall(measured) if measured else "not measured yet"
        if promise["due"]:
            line += f" (re-measure due: {promise['due']})"
        click.echo(f"{'recall':>16}: target {promise['target']:g}; {line}")
    for source in summary["external"]:
        click.echo(
            f"{'external':>16}: {source['kind']} {source['option']}={source['value']} "
            f"(trusted: it runs or stores data here)"
        )
