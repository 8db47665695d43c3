"""Keyword segmentation and FTS5 query building, shared by writes, searches and `$text` filters.

SQLite's FTS5 cannot do what 16 languages need on its own: its `unicode61` tokenizer makes a
whole Chinese, Japanese or Thai sentence one token, its `trigram` tokenizer finds nothing for a
two-character word (密码) and refuses `remove_diacritics`, and Python's sqlite3 cannot register a
custom tokenizer. So text is segmented here, in Python, into space-separated terms that FTS5
indexes as they are (an indexed shadow column):

- case folded, diacritics removed (NFKD, then the combining marks of Latin, Greek, Cyrillic,
  Hebrew and Arabic dropped; kana voicing marks and Hangul stay composed);
- words as `unicode61` would split them, except that identifiers joined by ``_ - . @ + / # :``
  (``ERR_CARD_502``, ``XR-2200``, ``anna@example.com``, ``3.14``) are kept whole, so they match
  exactly as typed; their parts and their parts run together (``xr2200``) are indexed too;
- runs of scripts written without spaces (Han, kana, Hangul, Thai) as overlapping character
  bigrams, plus single characters so a one-character query finds them.

Parts, joined forms and single characters go after the document's words: phrases ("XR-2200
broken") then match word after word. Queries are built from the same segmentation, every term
quoted, so nothing a user types (quotes, ``*``, ``NEAR``, ``-``, parentheses) reaches FTS5's
query syntax; text in double quotes is a phrase.
"""

from __future__ import annotations

import re
import unicodedata

#: The FTS5 table (rowid = the document's internal id) and its tokenizer: words split on
#: spaces and punctuation except the identifier joiners, which segmentation leaves inside terms.
TABLE = "keywords"
JOINERS = "_-.@+/#:"
TOKENIZER = f"unicode61 remove_diacritics 0 tokenchars '{JOINERS}'"
#: Terms of one query beyond which the rest are ignored: each costs an index lookup, and a
#: pasted page of text must not turn into a thousand-term OR.
MAX_QUERY_TERMS = 64
VERSION = 1

# Scripts written without spaces between words (Thai, Han, kana, Hangul syllables and jamo).
_DENSE = (
    "\u0e00-\u0e7f\u1100-\u11ff\u3005\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
# Combining marks removed after NFKD: Latin/Greek/Cyrillic diacritics, Hebrew points, Arabic
# harakat and tatweel, Thai vowel and tone marks (unicode61 splits words at them).
_MARKS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u0640\u064b-\u065f\u0670"
    "\u06d6-\u06ed\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
    "\ufe20-\ufe2f]+"
)
_WORD = rf"[^\W_{_DENSE}]+"
_TOKEN = re.compile(rf"([{_DENSE}]+)|({_WORD}(?:[{re.escape(JOINERS)}]+{_WORD})*)")
_PART = re.compile(_WORD)
_ASCII_TOKEN = re.compile(rf"[a-z0-9]+(?:[{re.escape(JOINERS)}]+[a-z0-9]+)*")
_ASCII_JOINED = re.compile(rf"[{re.escape(JOINERS)}]")
_ASCII_SPLIT = re.compile(rf"[{re.escape(JOINERS)}]+")
# ASCII lowered, everything but letters, digits and joiners made a space: what is left splits
# on spaces into _ASCII_TOKEN's words once their leading and trailing joiners are stripped.
_ASCII_WORDS = str.maketrans(
    {c: c.lower() if c.isalnum() or c in JOINERS else " " for c in map(chr, range(128))}
)
_ASCII_PART = re.compile("[a-z0-9]+")
_DENSE_CHAR = re.compile(f"[{_DENSE}]")
_PHRASE = re.compile(r'"([^"]*)"')
# Arabic letter variants folded to one form (alef maqsura / ya), beside NFKD's hamza removal.
_FOLD = str.maketrans({"\u0649": "\u064a"})


def normalise(text: str) -> str:
    """Case folded, compatibility forms unified and diacritics removed."""
    if text.isascii():
        return text.lower()
    text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return unicodedata.normalize("NFC", text).casefold().translate(_FOLD)


def _units(text: str) -> list[tuple[list[str], list[str]]]:
    """Per word or dense run: (its terms in order, the extra terms that also find it)."""
    if text.isascii():  # most texts: one simpler pattern, about 3x faster than the general one
        out = []
        for word in _ASCII_TOKEN.findall(text.lower()):
            if _ASCII_JOINED.search(word):
                parts = _ASCII_PART.findall(word)
                out.append(([word], [*parts, "".join(parts)]))
            else:
                out.append(([word], []))
        return out
    out = []
    for m in _TOKEN.finditer(normalise(text)):
        dense, word = m.group(1), m.group(2)
        if dense:
            if len(dense) == 1:
                out.append(([dense], []))
            else:
                bigrams = [dense[i : i + 2] for i in range(len(dense) - 1)]
                out.append((bigrams, list(dense)))
        else:
            parts = _PART.findall(word)
            extra = [*parts, "".join(parts)] if len(parts) > 1 else []
            out.append(([word], extra))
    return out


def segment(text: str) -> str:
    """The indexed terms of a document: words and bigrams in order, then the extra forms."""
    if text.isascii():
        return _segment_ascii(text)
    main, extra = [], []
    for terms, more in _units(text):
        main.extend(terms)
        extra.extend(more)
    return " ".join(main + extra)


def _segment_ascii(text: str) -> str:
    """`segment` of an ASCII text, the same terms 3x faster (ingest's hot path): str.translate
    and str.split do in C what a regex match per word did, and only words holding a joiner
    get any Python work."""
    terms, extra = [], []
    for word in text.translate(_ASCII_WORDS).split():
        if not word.isalnum():
            word = word.strip(JOINERS)
            if not word:
                continue
            if not word.isalnum():
                parts = _ASCII_SPLIT.split(word)
                extra += parts
                extra.append("".join(parts))
        terms.append(word)
    return " ".join(terms + extra) if extra else " ".join(terms)


def _quoted(terms: list[str]) -> str:
    return '"' + " ".join(terms) + '"'


def query_units(text: str) -> list[tuple[str, ...]]:
    """The units a search ranks by: single terms, and phrases (several terms) where the query
    has text in double quotes. At most MAX_QUERY_TERMS, duplicates removed."""
    units: list[tuple[str, ...]] = []
    for i, piece in enumerate(_PHRASE.split(text)):
        if i % 2:  # inside double quotes
            terms = tuple(t for u, _ in _units(piece) for t in u)
            if terms:
                units.append(terms)
        else:
            for terms, extra in _units(piece):
                # An identifier's parts find documents naming it differently; a dense run's
                # single characters would match nearly everything.
                found_by = [] if _DENSE_CHAR.match(terms[0]) else extra
                units.extend((t,) for t in terms + found_by)
    return list(dict.fromkeys(units))[:MAX_QUERY_TERMS]


def any_of(units: list[tuple[str, ...]]) -> str | None:
    """An FTS5 query matching documents holding any unit (None for no units).

    OR, not AND: a known-item or FAQ query rarely has all its words in the answer, and bm25
    ranks documents having more (and rarer) terms first.
    """
    return " OR ".join(_quoted(list(u)) for u in units) or None


def search_query(text: str) -> str | None:
    return any_of(query_units(text))


def filter_query(text: str) -> str | None:
    """An FTS5 query a document matches when it holds every word (dense runs and quoted text
    as phrases): ``{"$text": "XR-2200"}`` keeps exactly the documents naming that model."""
    parts: list[str] = []
    for i, piece in enumerate(_PHRASE.split(text)):
        if i % 2:
            terms = [t for u, _ in _units(piece) for t in u]
            if terms:
                parts.append(_quoted(terms))
        else:
            parts.extend(_quoted(terms) for terms, _ in _units(piece))
    unique = list(dict.fromkeys(parts))[:MAX_QUERY_TERMS]
    return " AND ".join(unique) or None
