"""How the grounding gate (core/agents/grounding.py) reads text: words, light stems, numbers,
sentences (statement, question or request) and the dates a turn refers to.

Pure functions of plain strings; any thread. No dependency beyond the standard library.

>>> is_statement("Where do I live?"), is_statement("I live in Oslo.")
(False, True)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Sequence

from core.agents.reldates import add_months, parse_turn_time

# --------------------------------------------------------------------------- vocabulary

STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before
being below between both but by can can't cannot could couldn't did didn't do does doesn't
doing don't down during each few for from further had hadn't has hasn't have haven't having he
he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if
in into is isn't it it's its itself let's me more most my myself no nor not of off on once only
or other ought our ours ourselves out over own same she she'd she'll she's should shouldn't so
some such than that that's the their theirs them themselves then there there's these they
they'd they'll they're they've this those through to too under until up very was wasn't we
we'd we'll we're we've were weren't what what's when when's where where's which while who
who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours
yourself yourselves will just also really still even quite pretty super lot lots much many
named called gonna wanna got gotten being im ive ill id dont cant wont u ur ya yeah yep yes oh
ok okay hey hi hello wow haha lol um uh like well thing things way something anything
everything mentioned mentions said says stated noted according due including various
especially currently recently
""".split())
# how an annotator or extractor frames a claim ("Kate finds hiking relaxing", "Ann values her
# family", "Jo shared a photo of ..."): the stance, not what grounds it, so not counted as content
STANCE_WORDS = frozenset("""
find finds found value values valued express expresses expressed enjoy enjoys enjoyed
appreciate appreciates appreciated believe believes believed consider considers considered
importance share shares shared photo photos pic pics picture pictures image images photograph
photography
""".split())

MONTHS = {m: i + 1 for i, m in enumerate(
    "january february march april may june july august september october november december".split())}
MONTHS.update({m[:3]: n for m, n in list(MONTHS.items())})
MONTHS["sept"] = 9
WEEKDAYS = {d: i for i, d in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}
SEASONS = {"spring": (3, 4, 5), "summer": (6, 7, 8), "fall": (9, 10, 11), "autumn": (9, 10, 11),
           "winter": (12, 1, 2)}

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
         "fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)}
NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
NUMBER_WORDS["dozen"] = 12
ORDINALS = {w: i + 3 for i, w in enumerate(
    "third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split())}
MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
# "one" is too often a pronoun ("the one", "one of") or "a" to be checked as a number
UNCHECKED_NUMBER_WORDS = frozenset({"one"})

IRREGULAR = {
    "went": "go", "gone": "go", "goes": "go", "going": "go", "got": "get", "gotten": "get",
    "ran": "run", "made": "make", "took": "take", "taken": "take", "saw": "see", "seen": "see",
    "bought": "buy", "brought": "bring", "thought": "think", "felt": "feel", "found": "find",
    "gave": "give", "given": "give", "kept": "keep", "left": "leave", "met": "meet", "paid": "pay",
    "said": "say", "sold": "sell", "sent": "send", "spent": "spend", "told": "tell", "won": "win",
    "wrote": "write", "written": "write", "began": "begin", "begun": "begin", "came": "come",
    "became": "become", "did": "do", "done": "do", "ate": "eat", "eaten": "eat", "drove": "drive",
    "driven": "drive", "flew": "fly", "flown": "fly", "grew": "grow", "grown": "grow",
    "knew": "know", "known": "know", "lost": "lose", "built": "build", "taught": "teach",
    "caught": "catch", "fought": "fight", "held": "hold", "heard": "hear", "understood":
    "understand", "chose": "choose", "chosen": "choose", "drew": "draw", "drawn": "draw",
    "sang": "sing", "sung": "sing", "swam": "swim", "wore": "wear", "worn": "wear", "broke":
    "break", "broken": "break", "fell": "fall", "fallen": "fall", "forgot": "forget", "led": "lead",
    "lent": "lend", "slept": "sleep", "spoke": "speak", "spoken": "speak", "stood": "stand",
    "threw": "throw", "woke": "wake", "children": "child", "kids": "child", "kid": "child",
    "men": "man", "women": "woman", "people": "person", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "wives": "wife", "lives": "live", "mom": "mother", "mum": "mother",
    "mommy": "mother", "mama": "mother", "dad": "father", "daddy": "father", "papa": "father",
    "grandma": "grandmother", "granny": "grandmother", "grandpa": "grandfather",
    "hubby": "husband", "bf": "boyfriend", "gf": "girlfriend", "fam": "family", "bday":
    "birthday", "pic": "photo", "pics": "photo", "picture": "photo", "pictures": "photo",
    "edu": "education", "uni": "university", "fav": "favorite", "fave": "favorite",
    "favourite": "favorite", "colour": "color", "bro": "brother", "sis": "sister",
    "vacation": "holiday", "vacations": "holiday", "uses": "use", "better": "good", "best": "good",
}

_SUFFIXES = ("ations", "ation", "ingly", "ings", "ing", "edly", "ness", "ment", "ivities", "ivity", "ities",
             "ity", "ies", "ied", "ers", "er", "ed", "es", "s")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light, deterministic stem: the same for the forms of a word we expect in chat.

    >>> [stem(w) for w in ("Running", "ran", "families", "family", "Sam's", "inclusivity", "inclusive")]
    ['run', 'run', 'famili', 'famili', 'sam', 'inclus', 'inclus']
    >>> [stem(w) for w in ("experience", "experienced", "importance", "important", "dancing", "dance")]
    ['experi', 'experi', 'import', 'import', 'danc', 'danc']
    """
    w = word.casefold().replace("’", "'")
    if w.endswith("'s") or w.endswith("s'"):
        w = w[:-2] if w.endswith("'s") else w[:-1]
    w = w.strip("'")
    w = IRREGULAR.get(w, w)
    if len(w) == 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]  # dogs, runs
    elif len(w) > 4:
        for suf in _SUFFIXES:
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                w = w[: -len(suf)]
                if suf in ("ies", "ied", "ities"):
                    w += "y"
                break
        if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
            w = w[:-1]  # runn -> run, stopp -> stop
    if w.endswith("e") and len(w) >= 4:
        w = w[:-1]
    for tail in ("anc", "enc", "ant", "iv"):  # acceptance/accepted, important, inclusive
        if w.endswith(tail) and len(w) - len(tail) >= 3:
            w = w[: -len(tail)]
            break
    if len(w) > 3 and w.endswith("y"):
        w = w[:-1] + "i"
    return w


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"(?P<num>\d+(?:,\d{3})*(?:\.\d+)?)(?:st|nd|rd|th|s)?|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)")
_BREAK = re.compile(r"[.!?:;\n\"“”(\[]|^\s*[-*•]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Token:
    text: str
    low: str  # casefolded, possessive removed
    is_num: bool
    initial: bool  # at the start of a sentence (capitalisation explains nothing)


def clean(text: object) -> str:
    """Text as the gate reads it: a str, NFC, control characters removed."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return _CONTROL.sub(" ", unicodedata.normalize("NFC", text))


def tokens(text: str) -> list[Token]:
    out: list[Token] = []
    last = 0
    for m in _TOKEN.finditer(text):
        between = text[last:m.start()]
        initial = not out or bool(_BREAK.search(between))
        last = m.end()
        if m.group("num") is not None:
            num = m.group("num").replace(",", "")
            out.append(Token(num, _norm_number(num), True, initial))
        else:
            word = m.group("word")
            low = word.casefold().replace("’", "'")
            if low.endswith("'s"):
                low = low[:-2]
            out.append(Token(word, low, False, initial))
    return out


def _norm_number(num: str) -> str:
    if "." in num:
        try:
            return repr(float(num))
        except ValueError:
            return num
    return str(int(num))


def numbers(toks: Sequence[Token]) -> list[tuple[str, int]]:
    """(value, token index) of every checked number: digits, number words (compounds such as
    "twenty-five" or "two hundred" read as one), word ordinals."""
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.is_num:
            out.append((t.low, i))
            i += 1
            continue
        if t.low in ORDINALS:
            out.append((str(ORDINALS[t.low]), i))
            i += 1
            continue
        if t.low in NUMBER_WORDS and t.low not in UNCHECKED_NUMBER_WORDS or \
                (t.low == "one" and i + 1 < len(toks) and toks[i + 1].low in MULTIPLIERS):
            start, total, cur = i, 0, 0
            while i < len(toks) and (toks[i].low in NUMBER_WORDS or toks[i].low in MULTIPLIERS):
                w = toks[i].low
                if w in MULTIPLIERS:
                    total += max(cur, 1) * MULTIPLIERS[w]
                    cur = 0
                else:
                    cur += NUMBER_WORDS[w]
                i += 1
            out.append((str(total + cur), start))
            continue
        i += 1
    return out


# --------------------------------------------------------------------------- sentences

_SENT = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
_QWORDS = frozenset("what where when who whom whose why how which".split())
_AUX = frozenset("do does did can could would will should shall is are am was were have has "
                 "had may might must isn't aren't don't doesn't didn't can't won't wouldn't "
                 "shouldn't couldn't".split())
_SUBJECTS = frozenset("i you we he she it they there this that my your his her our their anyone "
                      "anybody someone somebody everyone".split())
_REQUESTS = frozenset("please tell remind show give help list explain describe summarize summarise "
                      "find search translate recommend suggest check".split())
# "Nature sure refreshes us, huh?": a statement with a question tag
_TAG_QUESTION = re.compile(r",\s*(?:huh|right|eh|no|yeah|isn't it|aren't they|don't you think|you know)\s*\?+\s*$",
                           re.IGNORECASE)
_ASSERT_PREFIXES = re.compile(r"^\s*(?:please\s+)?(?:remember|note|fyi|for the record)\b[\s,:]*(?:that\b)?",
                              re.IGNORECASE)


# A leading greeting or thanks with a name ("Hi John!", "Hey Jon, I ...", "Thanks, Mel!"): the
# name is the listener, spoken to, not talked about, so it supports no fact ("Hi John! How are
# you?" says nothing about a John). Only address words, not "wow"/"oh" ("Wow, Paris!").
STRIP_ADDRESS = True
_ADDRESS_WORDS = (r"(?:hi|hey|heya|hiya|hello|yo|dear|thanks|thank you|thx|ty|congrats|"
                  r"congratulations|good (?:morning|afternoon|evening|night)|morning|evening|bye|"
                  r"goodbye|welcome(?: back)?|cheers|howdy|greetings)")
_NAME_WORD = r"(?!I\b|I['’])[A-Z][\w'’-]*"
_ADDRESS = re.compile(
    rf"^\s*(?i:{_ADDRESS_WORDS})(?:\s+(?i:there|again|so much|a lot|guys|both))?[\s,]+"
    rf"(?P<names>{_NAME_WORD}(?:\s*(?:,|and|&)\s*{_NAME_WORD})*)\s*(?:[,!.:;\-\u2014]+\s*|$)")


def address(sentence: str) -> tuple[tuple[str, ...], str]:
    """(the names a sentence opens by addressing, the rest of it).

    >>> address("Hi John!"), address("Hey Jon, I went hiking."), address("Hi, I'm Sam.")
    ((('John',), ''), (('Jon',), 'I went hiking.'), ((), "Hi, I'm Sam."))
    >>> address("Thanks Mel and Jo! It was fun."), address("Wow, Paris!")
    ((('Mel', 'Jo'), 'It was fun.'), ((), 'Wow, Paris!'))
    """
    m = _ADDRESS.match(sentence)
    if m is None:
        return (), sentence
    names = tuple(n for n in re.split(r"\s*(?:,|\band\b|&)\s*", m["names"]) if n)
    return names, sentence[m.end():].strip()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.findall(clean(text)) if s.strip()]


def sentence_kind(sentence: str) -> str:
    """"statement", "question" or "request" for one sentence (see `is_statement`)."""
    body = _ASSERT_PREFIXES.sub("", sentence)
    if body != sentence:
        return "statement"
    words = [t.text.casefold().replace("’", "'") for t in tokens(sentence) if not t.is_num][:3]
    if not words:
        return "statement" if not sentence.rstrip().endswith("?") else "question"
    if sentence.rstrip().endswith("?"):
        return "statement" if _TAG_QUESTION.search(sentence) and not _opens_question(words) else "question"
    if _opens_question(words):
        return "question"
    if words[0] in _REQUESTS or words[:2] == ["let", "me"]:
        return "request"
    return "statement"


def _opens_question(words: Sequence[str]) -> bool:
    """Whether a sentence's first casefolded words open a question ("where do", "what's", "should I")."""
    first, second = (list(words) + ["", ""])[:2]
    if first in _QWORDS and second in _AUX or first.removesuffix("'s") in _QWORDS and first.endswith("'s"):
        return True
    return first in _AUX and second in _SUBJECTS


def is_statement(text: str) -> bool:
    """True when at least one sentence of `text` states something.

    A sentence is a question when it ends with "?" or opens like one without the mark ("where
    do I live", "should I ..."); a request when it opens with "please" or an imperative such as
    "tell", "remind", "show" ("let me know" too). "Remember that ...", "note that ..." and
    "FYI" state what follows.

    >>> is_statement("Where do I live?"), is_statement("where do I live"), is_statement("I live in Oslo.")
    (False, False, True)
    >>> is_statement("Tell me a joke"), is_statement("Remember that my sister is Anna"), is_statement("")
    (False, True, False)
    """
    return any(sentence_kind(s) == "statement" for s in sentences(text))


_POSSESSIVE = frozenset({"my", "our"})


def presupposed(sentence: str) -> str:
    """The possessive phrases of a question or request ("my dog Rex"), which it takes as given."""
    toks = tokens(sentence)
    phrases = []
    for i, t in enumerate(toks):
        if t.low in _POSSESSIVE:
            words: list[str] = []
            for u in toks[i + 1:i + 5]:
                if u.low in STOPWORDS or len(words) == 3:
                    break
                words.append(u.text)
            if words:
                phrases.append(" ".join(words))
    return ". ".join(phrases)


# --------------------------------------------------------------------------- dates

def parse_time(time: str | None) -> date | None:
    """The calendar day of a turn's time string, or None (`core.agents.reldates.parse_turn_time`).

    >>> parse_time("1:56 pm on 8 May, 2023"), parse_time("2023-05-08T13:56:00"), parse_time("soon")
    (datetime.date(2023, 5, 8), datetime.date(2023, 5, 8), None)
    """
    return parse_turn_time(clean(time)) if time else None


_N = r"(\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|couple of|couple|few)"
_WD = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)"
_WD_ABBR = {"mon": 0, "tue": 1, "tues": 1, "wed": 2, "thu": 3, "thur": 3, "thurs": 3, "fri": 4,
            "sat": 5, "sun": 6}


def _count(word: str) -> tuple[int, int]:
    """The range of counts a quantity word may mean ("few" is 2 to 5)."""
    if word.isdigit():
        return int(word), int(word)
    if word in ("a", "an", "one"):
        return 1, 1
    if word.startswith("couple"):
        return 2, 3
    if word == "few":
        return 2, 5
    return NUMBER_WORDS[word], NUMBER_WORDS[word]


@dataclass
class Dates:
    """What a turn's dates allow: days (any day of a window), exact (days named precisely:
    the turn's own, "yesterday", "last Friday"), months as (year, month), years."""

    days: set[date]
    exact: set[date]
    months: set[tuple[int, int]]
    years: set[int]

    def span(self, lo: date, hi: date) -> None:
        lo, hi = min(lo, hi), max(lo, hi)
        if lo == hi:
            self.exact.add(lo)
        for k in range(min((hi - lo).days, 400) + 1):
            day = lo + timedelta(days=k)
            self.days.add(day)
            self.months.add((day.year, day.month))
            self.years.add(day.year)

    def month(self, ym: tuple[int, int]) -> None:
        self.months.add(ym)
        self.years.add(ym[0])


def resolved_dates(text: str, when: date | None) -> Dates:
    """The days, months and years a turn said at `when` refers to: its own day plus those of
    the relative dates in it ("yesterday", "last week", "two weekends ago", "next month",
    "three years ago", "last Friday", "this summer"). Generous windows: the gate only has to
    tell a resolved date from an invented one."""
    out = Dates(set(), set(), set(), set())
    if when is None:
        return out
    out.span(when, when)
    low = clean(text).casefold()
    d = lambda n: when + timedelta(days=n)  # noqa: E731
    fixed = [(r"\b(yesterday|last night)\b", -1, -1), (r"\btomorrow\b", 1, 1),
             (r"\bday before yesterday\b", -2, -2), (r"\bday after tomorrow\b", 2, 2),
             (r"\b(the other day|recently|lately|earlier this week)\b", -14, 0),
             (r"\b(last|past|previous) week\b|\ba week ago\b", -13, -1), (r"\bthis week\b", -6, 6),
             (r"\bnext week\b", 1, 13), (r"\b(last|past|this|the|next|on the) weekend\b", -9, 8)]
    for pattern, lo, hi in fixed:
        if re.search(pattern, low):
            out.span(d(lo), d(hi))
    for m in re.finditer(_N + r" (days?|weeks?|weekends?|months?|years?) (ago|before|earlier|later|from now)", low):
        a, b = _count(m.group(1))
        sign = 1 if m.group(3) in ("later", "from now") else -1
        _shift(out, when, m.group(2), sign * a, sign * b)
    for m in re.finditer(r"\bin " + _N + r" (days?|weeks?|months?|years?)\b", low):
        a, b = _count(m.group(1))
        _shift(out, when, m.group(2), a, b)
    for m in re.finditer(r"\b(last|this|next|past|on|)\s*" + _WD + r"\b", low):
        wd = WEEKDAYS[m.group(2)] if m.group(2) in WEEKDAYS else _WD_ABBR[m.group(2)]  # _WD matches only these
        back = (when.weekday() - wd) % 7 or 7  # days since the last such weekday
        # "last Friday": the one before, or the one of the week before; "next": the coming one or
        # the one after; "this" or bare: the last one or the coming one
        for k in {"next": (7, 14), "last": (0, -7), "past": (0, -7)}.get(m.group(1), (0, 7)):
            out.span(d(k - back), d(k - back))
    for word, k in (("last", -1), ("past", -1), ("previous", -1), ("this", 0), ("next", 1)):
        if re.search(rf"\b{word} month\b", low) or (k == -1 and word == "last" and "a month ago" in low):
            out.month(add_months(when, k))
        if re.search(rf"\b{word} year\b", low) or (k == -1 and word == "last" and "a year ago" in low):
            out.years.add(when.year + k)
        for season, months in SEASONS.items():
            if re.search(rf"\b{word} {season}\b", low):
                for y in (when.year - 1, when.year, when.year + 1):
                    for mo in months:
                        out.month((y, mo))
    return out


def _shift(out: Dates, when: date, unit: str, a: int, b: int) -> None:
    a, b = min(a, b), max(a, b)
    if unit.startswith("day"):
        out.span(when + timedelta(days=a), when + timedelta(days=b))
    elif unit.startswith("weekend"):
        out.span(when + timedelta(days=7 * a - 8), when + timedelta(days=7 * b + 1))
    elif unit.startswith("week"):
        out.span(when + timedelta(days=7 * a - 6), when + timedelta(days=7 * b + 6))
    elif unit.startswith("month"):
        for k in range(a, b + 1):
            out.month(add_months(when, k))
    else:
        out.years.update(when.year + k for k in range(a, b + 1))
