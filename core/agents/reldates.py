"""Relative dates in a turn's words, resolved against the turn's time (pure, no I/O).

`parse_turn_time` reads the time strings the app and LoCoMo use ("1:56 pm on 8 May, 2023",
"8 May, 2023", "May 8, 2023", ISO "2024-03-01T10:00:00"); `resolve_relative_dates` replaces
the relative phrases it knows with absolute ones. Anything it does not know (or any phrase
when the time is unknown) is left exactly as written: a relative phrase kept is less wrong
than a date guessed.

Readings chosen where English is ambiguous (all relative to the turn's date D):
- "last <weekday>": the most recent such day strictly before D; "this <weekday>": that day in
  D's Monday-to-Sunday week; "next <weekday>": that day in the following week.
- "this weekend": the Saturday of D's week; "last"/"next weekend": a week before/after that.
- "last/this/next week" stays a week ("the week before/of/after D"), not a guessed day.
- "N days ago" with an exact number becomes a date; weeks become "N weeks before D"; months
  and years become "in <Month> <year>" / "in <year>"; a vague number ("a few", "a couple
  of", "several") keeps the phrase: "a few days before D".
- "last/this/next spring|summer|fall|autumn": the season's year (northern hemisphere); winter
  (which spans two years) is left as is.
Not resolved: bare weekdays and months ("on Friday", "in March": past or future depends on
tense), "in two days" (often a duration), "recently", "the other day", "in the last year".

>>> resolve_relative_dates("I went there yesterday", parse_turn_time("1:56 pm on 8 May, 2023"))
'I went there on 7 May 2023'
>>> resolve_relative_dates("I went there yesterday", None)
'I went there yesterday'
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta

__all__ = ["parse_turn_time", "resolve_relative_dates", "format_day", "add_months"]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_MONTH_NO = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
_SEASONS = {"spring": (3, 5), "summer": (6, 8), "fall": (9, 11), "autumn": (9, 11)}
_PREPOSITIONS = {"since", "until", "till", "from", "by", "before", "after", "to", "through",
                 "around", "of", "in", "on", "during", "for"}


def parse_turn_time(when) -> date | None:
    """The calendar day of a turn's time, or None when it is absent or not understood.

    Accepts a `date`/`datetime` or a string in LoCoMo's style or ISO 8601. Never raises.

    >>> parse_turn_time("1:56 pm on 8 May, 2023"), parse_turn_time("2024-03-01T10:00:00")
    (datetime.date(2023, 5, 8), datetime.date(2024, 3, 1))
    >>> parse_turn_time("May 8, 2023"), parse_turn_time("soon"), parse_turn_time(None)
    (datetime.date(2023, 5, 8), None, None)
    """
    if isinstance(when, datetime):
        return when.date()
    if isinstance(when, date):
        return when
    if not isinstance(when, str):
        return None
    text = when.strip()[:100]
    try:
        m = re.match(r"(\d{4})-(\d{2})-(\d{2})", text)
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
        m = re.search(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\.?,?\s+(\d{4})\b", text)
        if m and m[2].lower() in _MONTH_NO:
            return date(int(m[3]), _MONTH_NO[m[2].lower()], int(m[1]))
        m = re.search(r"\b([A-Za-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b", text)
        if m and m[1].lower() in _MONTH_NO:
            return date(int(m[3]), _MONTH_NO[m[1].lower()], int(m[2]))
    except ValueError:  # 31 February and the like
        return None
    return None


def format_day(d: date) -> str:
    """'7 May 2023' (no locale involved).

    >>> format_day(date(2023, 5, 7))
    '7 May 2023'
    """
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def add_months(d: date, k: int) -> tuple[int, int]:
    """(year, month) `k` months after `d`'s month (k may be negative)."""
    n = d.year * 12 + (d.month - 1) + k
    return n // 12, n % 12 + 1


def _month(d: date, k: int) -> str:
    y, m = add_months(d, k)
    return f"{MONTHS[m - 1]} {y}"


def _on(d: date, part: str | None) -> tuple[str, str]:
    return ("on", f"the {part.lower()} of {format_day(d)}") if part else ("on", format_day(d))


# Each rule: a pattern and a handler (match, D) -> (preposition, phrase). The preposition is
# dropped when the turn already has one just before the phrase ("since last year" -> "since
# 2022", not "since in 2022").
_PART = r"(?:\s+(?P<part>morning|afternoon|evening|night))?"
_NOT_THE = r"(?<!the )"


def _weekday(m: re.Match, d: date) -> tuple[str, str]:
    which, target = m["which"].lower(), _WEEKDAYS.index(m["day"].lower())
    if which == "last" or which == "this past":
        back = (d.weekday() - target) % 7 or 7
        day = d - timedelta(days=back)
    else:
        monday = d - timedelta(days=d.weekday())
        day = monday + timedelta(days=target + (7 if which == "next" else 0))
    return _on(day, m["part"])


def _weekend(m: re.Match, d: date) -> tuple[str, str]:
    saturday = d + timedelta(days=5 - d.weekday())
    shift = {"last": -7, "this past": -7, "next": 7}.get(m["which"].lower(), 0)
    return "on", f"the weekend of {format_day(saturday + timedelta(days=shift))}"


def _period(m: re.Match, d: date) -> tuple[str, str]:
    which, unit = m["which"].lower(), m["unit"].lower()
    k = {"last": -1, "this past": -1, "this": 0, "next": 1}[which]
    if unit == "week":
        return "", f"the week {('before', 'of', 'after')[k + 1]} {format_day(d)}"
    if unit == "month":
        return "in", _month(d, k)
    return "in", str(d.year + k)


def _season(m: re.Match, d: date) -> tuple[str, str]:
    which, season = m["which"].lower(), m["season"].lower()
    first, last = _SEASONS[season]
    if which in ("last", "this past"):
        year = d.year if d.month > last else d.year - 1
    elif which == "next":
        year = d.year if d.month < first else d.year + 1
    else:
        year = d.year
    return "in", f"the {season} of {year}"


def _ago(m: re.Match, d: date) -> tuple[str, str]:
    qty, unit = m["qty"], m["unit"].lower()
    n = int(qty) if qty.isdigit() else _NUMBERS.get(qty.lower())
    if n is None or n > 1000:  # a vague amount: keep the turn's own words
        return "", f"{qty} {unit}s before {format_day(d)}"
    if unit == "day":
        return _on(d - timedelta(days=n), None)
    if unit == "week":
        return "", f"{qty} week{'s' if n != 1 else ''} before {format_day(d)}"
    if unit == "month":
        return "in", _month(d, -n)
    return "in", str(d.year - n)


_WD = "|".join(_WEEKDAYS)
_QTY = (r"(?P<qty>\d{1,4}|a couple of|a few|several|some|many|an?|one|two|three|four|five|six|seven|eight|nine|ten|"
        r"eleven|twelve)")
_RULES = [
    (r"\bthe day before yesterday\b" + _PART, lambda m, d: _on(d - timedelta(days=2), m["part"])),
    (r"\bthe day after tomorrow\b" + _PART, lambda m, d: _on(d + timedelta(days=2), m["part"])),
    (r"\byesterday\b" + _PART, lambda m, d: _on(d - timedelta(days=1), m["part"])),
    (r"\btomorrow\b" + _PART, lambda m, d: _on(d + timedelta(days=1), m["part"])),
    (r"\blast night\b", lambda m, d: _on(d - timedelta(days=1), "night")),
    (r"\btonight\b", lambda m, d: _on(d, "night")),
    (r"\bthis (?P<part>morning|afternoon|evening)\b", lambda m, d: _on(d, m["part"])),
    (r"\btoday\b", lambda m, d: _on(d, None)),
    (_NOT_THE + rf"\b(?P<which>last|this past|this|next) (?P<day>{_WD})\b" + _PART, _weekday),
    (_NOT_THE + r"\b(?P<which>last|this past|this|next) weekend\b", _weekend),
    (_NOT_THE + r"\b(?P<which>last|this past|this|next) (?P<unit>week|month|year)\b", _period),
    (_NOT_THE + r"\b(?P<which>last|this past|this|next) (?P<season>spring|summer|fall|autumn)\b", _season),
    (rf"\b{_QTY} (?P<unit>day|week|month|year)s? ago\b", _ago),
]
_COMPILED = [(re.compile(p, re.I), h) for p, h in _RULES]


def resolve_relative_dates(text: str, day: date | None) -> str:
    """`text` with the relative date phrases it knows replaced, relative to `day`.

    `day` None (time unknown) returns `text` unchanged. Never raises on any string.

    >>> D = date(2023, 5, 8)  # a Monday
    >>> [resolve_relative_dates(s, D) for s in ("yesterday", "tomorrow", "two days ago")]
    ['on 7 May 2023', 'on 9 May 2023', 'on 6 May 2023']
    >>> [resolve_relative_dates(s, D) for s in ("last week", "last year", "next month")]
    ['the week before 8 May 2023', 'in 2022', 'in June 2023']
    >>> [resolve_relative_dates(s, D) for s in ("last Friday", "this weekend", "last night")]
    ['on 5 May 2023', 'on the weekend of 13 May 2023', 'on the night of 7 May 2023']
    >>> resolve_relative_dates("I have lived here since last year", D)
    'I have lived here since 2022'
    >>> resolve_relative_dates("a few days ago", D), resolve_relative_dates("3 months ago", D)
    ('a few days before 8 May 2023', 'in February 2023')
    >>> resolve_relative_dates("We went hiking last summer, I moved in March", D)
    'We went hiking in the summer of 2022, I moved in March'
    """
    if day is None or not isinstance(text, str) or not text:
        return text
    for pattern, handler in _COMPILED:
        text = pattern.sub(functools.partial(_replace, handler=handler, day=day), text)
    return text


def _replace(m: re.Match, handler, day: date) -> str:
    try:
        prep, phrase = handler(m, day)
    except (ValueError, OverflowError):  # a date out of range: keep the words
        return m.group(0)
    before = m.string[max(0, m.start() - 30):m.start()].rstrip().rsplit(None, 1)
    if prep and before and before[-1].lower() in _PREPOSITIONS:
        return phrase
    return f"{prep} {phrase}" if prep else phrase
