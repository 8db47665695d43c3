"""A known-item corpus from Debian's manual pages (packages manpages, manpages-dev and whatever
else installed pages), built mechanically: every page's NAME summary is a query, the rest of
the page (from SYNOPSIS on, groff markup stripped, first 600 characters) its document.

Pages that are aliases (``.so`` includes, symlinks) are skipped; a summary shared by several
pages is kept as a document but not asked as a query (its answer would be ambiguous).
Install: ``apt-get install -y manpages manpages-dev`` (the base system brings man1 pages).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

MAN = Path("/usr/share/man")
DOC_CHARS = 600
#: Pages in the corpus: every page that is not Google Cloud SDK's, then a fixed random sample
#: of those (16,625 gcloud pages would otherwise be 85 % of it), encoded in minutes.
SIZE = 10_000

_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SPECIAL = re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*(\(..|\[[^\]]*\]|.)|\\[&|^%:]|\\s[+-]?\d")
_MACRO_TEXT = re.compile(r"^\.(B|I|BR|IR|RB|RI|BI|IB|SM|SB|TP|IP|Nm|Nd|Fn|Fa|Ar|Fl|Xr)\s+(.*)")


def _text(line: str) -> str | None:
    """A groff source line as plain text, or None for requests that print nothing."""
    if line.startswith(('.\\"', "'\\\"", '.\\"')):
        return None
    if line.startswith(".") or line.startswith("'"):
        m = _MACRO_TEXT.match(line)
        if not m:
            return None
        line = m.group(2).replace('"', "")
    line = _FONT.sub("", line)
    line = _SPECIAL.sub("", line)
    return line.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").strip()


def read_page(path: Path) -> str | None:
    """A page's groff source, None for symlinks (aliases) and unreadable files."""
    if path.is_symlink():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError):
        return None


def page_text(path: Path) -> str | None:
    """A whole page as plain text (markup stripped, lines joined by spaces), None for aliases."""
    raw = read_page(path)
    if raw is None or raw.lstrip().startswith(".so "):
        return None
    return " ".join(t for t in map(_text, raw.splitlines()) if t)


def parse(path: Path) -> tuple[str, str] | None:
    """(summary, document) of one page, or None for aliases and pages without a NAME line."""
    raw = read_page(path)
    if raw is None:
        return None
    if raw.lstrip().startswith(".so "):
        return None
    lines = raw.splitlines()
    name_at = next(
        (i for i, ln in enumerate(lines) if re.match(r'^\.S[Hh]\s+"?NAME"?\s*$', ln)), None
    )
    if name_at is None:
        return None
    name_lines, rest_at = [], len(lines)
    for i in range(name_at + 1, len(lines)):
        if re.match(r"^\.S[Hh]\b", lines[i]):
            rest_at = i
            break
        text = _text(lines[i])
        if text:
            name_lines.append(text)
    name = " ".join(name_lines)
    if " - " not in name:
        return None
    summary = name.split(" - ", 1)[1].strip()
    body = []
    for line in lines[rest_at:]:
        text = _text(line)
        if text:
            body.append(text)
    doc = " ".join(body)[:DOC_CHARS]
    if len(summary) < 8 or len(doc) < 100:
        return None
    return summary, doc


def build(out: Path) -> list[dict[str, str]]:
    """Parse every page once and cache the corpus as JSONL (sorted by page path)."""
    if out.exists():
        return [json.loads(line) for line in out.read_text().splitlines()]
    rows = []
    for path in sorted(MAN.glob("man[1-8]/*.gz")):
        parsed = parse(path)
        if parsed:
            rows.append({"id": path.name[:-3], "query": parsed[0], "doc": parsed[1]})
    other = [r for r in rows if not r["id"].startswith("gcloud")]
    gcloud = [r for r in rows if r["id"].startswith("gcloud")]
    random.Random(0).shuffle(gcloud)
    rows = sorted(other + gcloud[: max(0, SIZE - len(other))], key=lambda r: r["id"])
    shared = Counter(r["query"].lower() for r in rows)
    for r in rows:
        r["ask"] = shared[r["query"].lower()] == 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def passages(n: int) -> list[str]:
    """``n`` passages of 300 characters from the installed manual pages, in path order."""
    out: list[str] = []
    for path in sorted(MAN.glob("man[1-8]/*.gz")):
        raw = read_page(path)
        if raw is None:
            continue
        text = " ".join(t for t in map(_text, raw.splitlines()) if t)
        out += [text[s : s + 300] for s in range(0, len(text) - 150, 300)]
        if len(out) >= n:
            return out[:n]
    return out


def halves(n: int) -> tuple[list[int], list[int]]:
    """The queries' dev and test halves (positions among the asked queries), by a fixed seed:
    defaults are chosen on dev, figures reported on test, by every script scoring this set."""
    order = list(range(n))
    random.Random(0).shuffle(order)
    return order[: n // 2], order[n // 2 :]


def timed(test: list[int], n: int = 300) -> list[int]:
    """The fixed sample of test queries whose latency is measured (the same in every script)."""
    return random.Random(2).sample(test, min(n, len(test)))


def metrics(rankings: list[list[int]], truth: list[int]) -> tuple[float, float]:
    """MRR@10 and recall@10 in percent: ``rankings`` are document positions, best first."""
    rr, hit = [], []
    for ranks, want in zip(rankings, truth, strict=True):
        top = list(ranks[:10])
        rr.append(1 / (top.index(want) + 1) if want in top else 0.0)
        hit.append(want in top)
    return 100 * sum(rr) / len(rr), 100 * sum(hit) / len(hit)


if __name__ == "__main__":
    rows = build(Path(__file__).parent / "out" / "manpages.jsonl")
    print(len(rows), "pages,", sum(r["ask"] for r in rows), "queries")
    for r in rows[:: len(rows) // 5]:
        print(r["id"], "|", r["query"], "|", r["doc"][:200])
