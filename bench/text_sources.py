"""Real text lying on a Debian system, as sentences: translated manual pages, gettext message
catalogues and the documents under /usr/share/doc. Shared by the benchmarks that need real text
nobody here wrote (bench/ray_ingest.py, bench/real_corpus.py).

Debian's package descriptions (the apt/dpkg database) are deliberately not a source: they are
kept apart for an independent check elsewhere.
"""

from __future__ import annotations

import gettext
import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hybrid_corpus import MAN, page_text

DOC_CACHE = Path(tempfile.gettempdir()) / "hubsearch-bench-doc-sentences.txt"
LOCALE = Path("/usr/share/locale")
#: Locale folder names (of /usr/share/man/<x> and /usr/share/locale/<x>) of the languages
#: `use-multilingual` was trained on, mapped to its language codes.
LANGS = {
    "ar": "ar", "de": "de", "es": "es", "fr": "fr", "it": "it", "ja": "ja", "ko": "ko",
    "nl": "nl", "pl": "pl", "pt": "pt", "pt_BR": "pt", "ru": "ru", "th": "th", "tr": "tr",
    "zh_CN": "zh-CN", "zh_TW": "zh-TW",
}  # fmt: skip
UNSPACED = {"ja", "zh-CN", "zh-TW", "th"}
_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (whitespace collapsed), split after . ! ? and their CJK forms."""
    return [s.strip() for s in _SPLIT.split(re.sub(r"\s+", " ", text)) if s.strip()]


def is_prose(sentence: str, lang: str = "en", low: int = 20, high: int = 200) -> bool:
    """A sentence of prose: a length in characters (half for languages written without spaces),
    mostly letters (not a command line, a table row or a path), and several words."""
    n = len(sentence)
    if lang in UNSPACED:
        low, high = low // 2, high // 2
    if not low <= n <= high:
        return False
    if lang not in UNSPACED and len(sentence.split()) < 4:
        return False
    return sum(c.isalpha() or c.isspace() for c in sentence) > 0.8 * n


def doc_sentences() -> list[str]:
    """Distinct short sentences of /usr/share/doc, cached (reading the docs takes ~45 s)."""
    if DOC_CACHE.exists():
        return DOC_CACHE.read_text().splitlines()
    found: set[str] = set()
    for root, _, files in os.walk("/usr/share/doc"):
        for name in files:
            path = os.path.join(root, name)
            if name.startswith("copyright"):
                continue  # licence texts, the same few thousand lines everywhere
            try:
                if name.endswith(".gz"):
                    with gzip.open(path, "rt", errors="ignore") as f:
                        data = f.read(2_000_000)
                elif name.endswith((".txt", ".md")) or name.upper().startswith(("README", "NEWS")):
                    with open(path, errors="ignore") as f:
                        data = f.read(2_000_000)
                else:
                    continue
            except OSError:
                continue
            for s in _SPLIT.split(re.sub(r"\s+", " ", data)):
                s = s.strip()
                if 20 <= len(s) <= 200 and sum(c.isalpha() for c in s) > 0.7 * len(s):
                    found.add(s)
    ordered = sorted(found, key=lambda s: hashlib.sha1(s.encode()).digest())
    DOC_CACHE.write_text("\n".join(ordered))
    return ordered


def man_sentences() -> Iterator[tuple[str, str, str]]:
    """(language, sentence, page) of every manual page: English ones (man1-8) and the
    translations installed under /usr/share/man/<locale> (packages manpages-de, -fr, ...)."""
    folders = [("en", MAN)] + [
        (lang, MAN / name) for name, lang in sorted(LANGS.items()) if (MAN / name).is_dir()
    ]
    for lang, folder in folders:
        for path in sorted(folder.glob("man[1-8]/*.gz")):
            text = page_text(path)
            if text:
                for s in split_sentences(text):
                    yield lang, s, f"man:{path.relative_to(MAN)}"


def gettext_sentences() -> Iterator[tuple[str, str, str]]:
    """(language, sentence, catalogue) of the installed gettext translations: each translated
    message in its language, and its English original."""
    for name, lang in sorted(LANGS.items()):
        for path in sorted((LOCALE / name / "LC_MESSAGES").glob("*.mo")):
            try:
                with path.open("rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
            except (OSError, ValueError, LookupError):  # a damaged catalogue or odd charset
                continue
            where = f"mo:{name}/{path.stem}"
            for key, value in catalog.items():
                msgid = key[0] if isinstance(key, tuple) else key
                if not msgid or not isinstance(value, str):
                    continue  # the header entry
                for s in split_sentences(msgid.split("\x04")[-1]):
                    yield "en", s, where
                for s in split_sentences(value):
                    yield lang, s, where
