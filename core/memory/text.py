"""Text hygiene for the memory bank: validation, duplicate keys, safe FTS5 queries.

Texts are stored as given except: NUL characters are dropped (SQLite's C API and FTS5 stop
at them), lone UTF-16 surrogates (not encodable as UTF-8) become U+FFFD, and surrounding
whitespace is stripped. Other control characters and any Unicode are kept.
Text a model wrote (a fact, an op's text) goes through `clean_fragment` first: one line, no
control characters; what it returns the bank stores unchanged.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime

from core.errors import InvalidInputError

MAX_TEXT_CHARS = 4_000_000  # 1 MB texts are fine; this only stops absurd inputs
MAX_QUERY_TERMS = 64
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# English function words: they match most memories, cost a full bm25 ranking and add nothing
STOPWORDS = frozenset("""
a about an and any are as at be been but by can could did do does for from had has have he her
hers him his how i if in into is it its me my of on or our she should so than that the their
them then there these they this those to us was we were what when where which who whom why will
with would you your
""".split())


def fix_unicode(text: str) -> str:
    """`text` without NULs, its lone surrogates replaced by U+FFFD (valid pairs joined)."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep valid pairs, replace the rest
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clean_fragment(text: str) -> str:
    """One line of model-written text: `fix_unicode`, every other control character (Unicode
    category Cc: newlines, tabs, BEL, C1 codes...) read as a space, whitespace collapsed.
    `clean_text(clean_fragment(t)) == clean_fragment(t)` for any non-blank result.

    >>> clean_fragment(" Maya\\n has a\\x00 cat\\x07\\t\\ud800 ")
    'Maya has a cat \ufffd'
    """
    text = fix_unicode(text)
    if not text.isprintable():
        text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())


def clean_optional(text: str | None) -> str | None:
    """Like `clean_text` but for optional fields: None or blank -> None."""
    if text is None:
        return None
    text = fix_unicode(str(text)).strip()
    return text or None


def clean_text(text, what: str = "memory text") -> str:
    """A valid memory text, or InvalidInputError (not a string, empty, whitespace, too long)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"The {what} must be a string, not {type(text).__name__}.")
    text = fix_unicode(text).strip()
    if not text:
        raise InvalidInputError(f"The {what} is empty.")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"The {what} is too long ({len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}).")
    return text


def clean_time(value) -> str | None:
    """An observed-at timestamp: free text as given (LoCoMo style or ISO), or a datetime."""
    if isinstance(value, datetime):
        return value.isoformat()
    return clean_optional(value)


def text_key(text: str) -> str:
    """The duplicate key: SHA-1 of the case-folded, whitespace-collapsed text."""
    norm = " ".join(text.casefold().split())
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


def fts_query(query: str) -> str | None:
    """An FTS5 MATCH expression that ORs the query's words (stopwords dropped), each quoted.

    Quoting every word means no user text is ever parsed as FTS5 syntax (AND, NEAR, column
    filters, `*`, quotes, SQL fragments); None when the query has no words.

    >>> fts_query('Robert"); DROP TABLE memories;--')
    '"robert" OR "drop" OR "table" OR "memories"'
    >>> fts_query("What did Caroline do in May?")
    '"caroline" OR "may"'
    >>> fts_query("who is it")  # only stopwords: keep them
    '"who" OR "is" OR "it"'
    >>> fts_query("?!") is None
    True
    """
    words = dict.fromkeys(w.lower() for w in _WORD.findall(query))
    if not words:
        return None
    words = {w: None for w in words if w not in STOPWORDS} or words
    return " OR ".join(f'"{w}"' for w in list(words)[:MAX_QUERY_TERMS])
