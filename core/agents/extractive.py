"""Extractive facts: a small model only CHOOSES among the turn's own statements; code rewrites.

A 135M model asked to write facts invents them. Here the turn is split into candidate
statements taken from its own words (`candidates`), a chooser picks which are worth keeping
(`choose(candidates) -> indices`: the model through `choice_messages`/`choice_schema`/
`parse_choice`, "keep all", or a test), and `rewrite` turns each chosen statement into a
third-person fact about the speaker with relative dates resolved. Every word of a fact is
then the turn's own, the speaker's name, an inflection (loves, has, is, does) or a resolved
date's words: a chooser can drop a fact but cannot invent one.

Filler (`filler`, `FILTER_FILLER`): candidates about the listener ("Your passion is awesome"),
replies ("Thanks so much, Mel", "Sounds great"), evaluations without content ("Nice spot",
"That bowl is awesome") and questions without a mark are not offered to the chooser.

Pure functions, no model, I/O or threads; any thread may call them. Only `parse_choice` and
`extract_facts` raise (`ModelOutputError`, for a choice that is not a list of valid indices);
`candidates` and `rewrite` never raise on any input.

What `rewrite` does (doctests below and in `core.agents.reldates`):
- I / me / my / mine / myself -> the speaker ("Sam", "Sam's", "themselves"), with the verb
  agreeing: "I love" -> "Sam loves", "I have"/"I've" -> "has", "I'm"/"I am" -> "is",
  "I don't" -> "doesn't", "I'd" -> "had" (before a participle) or "would", "I'll" -> "will";
  past tenses ("I was", "I moved"), modals ("I can") and "X and I love" stay as they are.
- we / us -> "Sam and others" (the verb stays plural; it neither drops the others nor guesses
  who they are); our / ours -> "Sam's"; ourselves -> "themselves".
- A leading greeting or address is dropped: "Hey Jon, I ..." -> "Sam ...".
- Relative dates are resolved against the turn's time (see `core.agents.reldates`).
- The first letter is capitalised and the fact ends with a full stop.
Left as is, by design: "you"/"your" (the listener, whose name the rewrite is not given);
third-person pronouns ("his name is Buddy"); a trailing address ("thanks, Jon": it cannot be
told from "Lisbon, Portugal"); month names and weekdays without "last/this/next".
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Callable, Sequence

from core.agents.reldates import parse_turn_time, resolve_relative_dates
from core.errors import ModelOutputError
from core.types import ChatBackend, GenParams

__all__ = ["candidates", "filler", "rewrite", "extract_facts", "choice_messages", "choice_schema",
           "parse_choice", "model_chooser", "keep_all", "MAX_CANDIDATES", "MAX_CANDIDATE_CHARS"]

MAX_CANDIDATES = 12
MAX_CANDIDATE_CHARS = 200
MAX_INPUT_CHARS = 20_000  # of a turn; the candidates are the first MAX_CANDIDATES in text order
MAX_SENTENCE_CHARS = 2_000  # split into clauses; the rest of a longer sentence is dropped
MAX_SPEAKER_CHARS = 60
DEFAULT_SPEAKER = "The user"

# --------------------------------------------------------------------------- cleaning

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
_DROP_CATEGORIES = {"So", "Cs", "Co", "Cn", "Cf"}  # emoji/symbols, lone surrogates, format chars


def _clean(text, limit: int) -> str:
    """`text` cut to `limit` chars, without control characters, emoji or lone surrogates."""
    if not isinstance(text, str):
        return ""
    out = []
    for ch in text[:limit].translate(_APOSTROPHES):
        if ch in "\n\r\u2028\u2029":
            out.append("\n")
        elif ch == "\t" or unicodedata.category(ch) == "Cc":
            out.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES and ch not in "\ufe0e\ufe0f":
            out.append(ch)
    return re.sub(r"[ \u00a0]+", " ", "".join(out))


# --------------------------------------------------------------------------- candidates

_ABBREVIATION_END = re.compile(r"\b(?:mr|mrs|ms|dr|prof|st|jr|sr|vs|e\.g|i\.e)\.$", re.I)
_SENTENCE_END = re.compile(r"""[.!?\u2026]+["')\]]*(?=\s|$)|\n+""")
_INTERJECTION = (r"(?i:hi|hey|hello|hiya|yo|oh|ah|aw+|wow|ha(?:ha)+h?|hah|lol|ok|okay|well|yeah|"
                 r"yes|yep|no|nope|um+|uh+|hm+|btw|thanks|thank you|congrats|congratulations|omg|"
                 r"sure|great|cool|nice|awesome|dear|good morning|good evening|morning)")
_NAME = r"(?!I\b)[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?"
_LEAD = re.compile(rf"^(?:{_INTERJECTION}(?:\s+(?i:there|guys|everyone|all))?(?:[\s,]+{_NAME})?\s*[,!.:;]+\s*)+")
_FIRST_PERSON_SUBJECT = r"(?:I|I'm|I've|I'd|I'll|[Mm]y|[Ww]e|[Ww]e're|[Ww]e've|[Oo]ur)\b"
_JOINT = re.compile(rf"\s*(?:;|,?\s+(?:and then|and so|and|but|so|plus)\b,?)\s+(?={_FIRST_PERSON_SUBJECT})")
# a clause with a verb of its own: a pronoun subject (or the rewrite's speaker placeholder)
# followed by a word, a past tense, or an auxiliary
_VERBISH = re.compile(r"(?:\b(?:I|we|they|he|she)|\x00)(?:'\w+)?\s+\w|\b\w{3,}ed\b|"
                      r"\b(?:is|are|was|were|am|has|have|had|got|went|do|does|did|can|will|would)\b", re.I)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

_STOPWORDS = set("""
a an the i i'm i've i'd i'll me my mine myself we we're we've us our you you're your yours he
she it it's its they them their this that that's these those there here is am are was were be
been being do does did don't didn't have has had will would can could should shall may might
must to of in on at for with about as by from up down out so too very really just and or but
if then than not no yes what how why when where who which all any some much more most also
again well oh ah one way thing things stuff lot bit kind sort something anything everything
nothing always now today let's let get got go going gonna wanna him her his hers himself
herself one ones
""".split())
_SMALL_TALK = set("""
hi hey hello hiya thanks thank ok okay lol sure sounds sound good great cool nice awesome
amazing wow yeah yep nope bye goodbye see later soon talk talking chat chatting congrats
congratulations glad happy hear hearing hope think know agree right exactly totally absolutely
definitely course worries problem luck care take meet same neither either love like enjoy feel
fun funny hilarious cute adorable crazy interesting wonderful fantastic lovely sweet perfect excited exciting
proud sorry sad day
night morning evening tell say said mean guess true wish miss missed share sharing welcome
loved liked enjoyed loving enjoying felt
""".split())
_LAUGH = re.compile(r"^(?:(?:ha)+h?|(?:he)+|lo+l|a+w+|hm+|u+m+|o+h+|a+h+|x+d+)$", re.I)

_NAMED_RELATION = re.compile(
    r"\bmy\s+(?P<adj>(?:(?:little|big|old|new|older|younger|baby|best|pet|dear|late)\s+)?)"
    r"(?P<noun>dog|cat|puppy|kitten|pup|parrot|bird|hamster|rabbit|bunny|horse|turtle|son|"
    r"daughter|kid|wife|husband|partner|girlfriend|boyfriend|fianc[eé]e?|brother|sister|mom|"
    r"mum|mother|dad|father|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|niece|"
    r"nephew|friend|boss|coworker|colleague|roommate|neighbou?r|teacher|coach|therapist)"
    r",?\s+(?P<name>(?!(?:I|Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b)[A-Z][a-z]+)\b")


def _sentences(text: str):
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start:m.end()]
        if not m.group().startswith("\n") and _ABBREVIATION_END.search(piece[-12:].rstrip("\"')]")):
            continue  # "Dr. Lee": keep reading the same sentence
        yield piece.strip()
        start = m.end()
    yield text[start:].strip()


def _strip_lead(s: str) -> str:
    return _LEAD.sub("", s, count=1).strip()


def _has_content(s: str) -> bool:
    words = [w.lower() for w in _WORD.findall(s)]
    if len(words) < 2:
        return False
    return any(w not in _STOPWORDS and w not in _SMALL_TALK and not _LAUGH.match(w)
               and (len(w) > 1 or w.isdigit()) for w in words)


def _clauses(sentence: str) -> list[str]:
    """`sentence` split before a first-person subject at "; / and / but / so" when the part
    before it has a verb of its own (so "My wife and I moved" stays whole)."""
    out, start, seen, has_verb = [], 0, 0, False
    for m in _JOINT.finditer(sentence):
        has_verb = has_verb or bool(_VERBISH.search(sentence, seen, m.start()))
        seen = m.start()
        if has_verb:
            out.append(sentence[start:m.start()])
            start, has_verb = m.end(), False
    out.append(sentence[start:])
    return [c.strip(" ,;") for c in out]


_TRAILING_LAUGH = re.compile(r"(?:[\s,]+(?i:lol|lmao|rofl|ha(?:ha)+h?|he(?:he)+|xd))+\s*$")


def _bounded(s: str) -> str:
    if len(s) <= MAX_CANDIDATE_CHARS:
        return s
    cut = s[:MAX_CANDIDATE_CHARS]
    at = cut.rfind(", ")
    if at < MAX_CANDIDATE_CHARS // 2:
        at = cut.rfind(" ")
    return cut[:at] if at > 0 else cut


def _question_facts(question: str) -> list[str]:
    """From a question, only "my <relation> <Name>" as "I have a <relation> named <Name>"."""
    return [f"I have a {m['adj']}{m['noun']} named {m['name']}" for m in _NAMED_RELATION.finditer(question)]


# --------------------------------------------------------------------------- filler

# Session 6: candidates that say nothing about anyone to remember are dropped before the chooser
# (the embedded chooser keeps nearly everything: the val bank had 761 memories, "Nice spot.",
# "Your passion and commitment are awesome."). Tuned on LoCoMo train conv-26 against its gold
# observations, reported on val (benchmarks/extractive.py --locomo; docs/results.md). False
# gives the session-5 candidates.
FILTER_FILLER = True
FILLER_MAX_CONTENT = 2  # an evaluation without first person keeps at most this many content words

_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|[Mm]e|[Mm]y|[Mm]ine|[Mm]yself|[Ww]e|[Ww]e're|[Ww]e've|"
                           r"[Ww]e'd|[Ww]e'll|[Uu]s|[Oo]ur|[Oo]urs|[Oo]urselves)\b")
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|you've|you'd|you'll|yours|yourself|yourselves|ya|y'all|u|ur)\b",
                            re.I)
# replies to the other speaker: thanks, congratulations, sympathy, agreement, "sounds great"
_REPLY = re.compile(
    r"^(?:[A-Z][\w'-]*,\s*)?(?:(?:oh|aw+|wow)(?: man| no| wow)?,?\s*)?(?:thanks|thank you|thx|congrats|"
    r"congratulations|sorry to hear|sorry about|so sorry|glad|totally agree|agreed|appreciate it|take care|"
    r"good luck|bye|see you|sounds|looks like|looks (?:great|good|amazing|awesome|fun|beautiful|lovely)|"
    r"looks awesome|i (?:totally |completely |fully )?agree|i hear you|i bet|i can imagine|i know what you mean|"
    r"i feel you|i (?:totally )?get (?:it|that|you)|i understand|you're right|you are right|i wish you|"
    r"i'm (?:so |really |very )?(?:glad (?:you|to hear|that you|it|for you)|happy for you|sorry (?:to hear|about|for))"
    r")\b", re.I)
_EVALUATIVE = frozenset("""
great good nice cool awesome amazing wonderful fantastic lovely beautiful gorgeous stunning incredible
inspiring inspirational impressive powerful special cute adorable sweet fun funny hilarious interesting
exciting excited touching moving heartwarming brave strong proud happy glad sad tough hard easy rough
scary crazy wild insane epic perfect brilliant neat sick dope rad fab fabulous superb terrific awful
terrible horrible wow whoa yay thrilled stoked pumped thankful grateful blessed lucky inspired vivid
breathtaking refreshing relaxing calming peaceful soothing meaningful important crucial necessary
encouraging uplifting emotional sounds looks seems seem must been such totally super truly absolutely
definitely seriously pretty quite long woohoo yay bet keep check spill agreed
""".split())
_TRAILING_ADDRESS = re.compile(r",\s*[A-Z][\w'-]*\s*$")
_LEADING_ADDRESS = re.compile(r"^[A-Z][\w'-]*,\s+")


def filler(candidate: str) -> str | None:
    """Why a candidate statement is not worth offering the chooser, or None (keep it):

    - "listener": it is about the other speaker, not the speaker ("Your passion and commitment
      are awesome", "You're doing amazing"): second person and no first person;
    - "reply": thanks, congratulations, sympathy, agreement ("Thanks so much, Mel",
      "Sounds great", "Glad you had a great time", "I totally agree");
    - "evaluation": an exclamation or a verdict without first person and with at most
      FILLER_MAX_CONTENT content words, opening with a function or evaluative word ("Nice
      spot", "That bowl is awesome, Mel", "The pride event was awesome"); a number or a
      name in it, or a plain opening word ("Rex loves the beach"), keeps it;
    - "question": it opens like a question or a request without the question mark ("Do you
      like it", "Check out the crowd").

    >>> [filler(c) for c in ("Your passion and commitment are awesome", "Thanks so much, Mel",
    ...                      "Nice spot", "Rex loves the beach", "I adopted a dog", "Do you like it")]
    ['listener', 'reply', 'evaluation', None, None, 'question']
    """
    from core.agents.grounding_text import sentence_kind

    text = candidate.strip()
    reply = _REPLY.match(text)
    if reply and not _FIRST_PERSON.search(text, reply.end()):  # "I totally get it, I had a mentor too": kept
        return "reply"
    if sentence_kind(text) != "statement":
        return "question"
    if _FIRST_PERSON.search(text):
        return None
    if _SECOND_PERSON.search(text):
        return "listener"
    body = _LEADING_ADDRESS.sub("", _TRAILING_ADDRESS.sub("", text))
    words = _WORD.findall(body)
    if not words or any(w.isdigit() for w in words):
        return None if words else "evaluation"
    if any(w[0].isupper() for w in words[1:]):
        return None  # a name past the first word ("the trip to Paris was great")
    first = words[0].lower()
    if first not in _STOPWORDS and first not in _SMALL_TALK and first not in _EVALUATIVE:
        return None  # "Rex loves the beach", "Family moments make life awesome"
    content = [w for w in (x.lower() for x in words) if w not in _STOPWORDS and w not in _SMALL_TALK
               and w not in _EVALUATIVE and len(w) > 1]
    return "evaluation" if len(content) <= FILLER_MAX_CONTENT else None


def candidates(text: str) -> list[str]:
    """The turn's statements worth offering to a chooser, in text order, at most
    MAX_CANDIDATES of at most MAX_CANDIDATE_CHARS each. Never raises.

    Sentences; long ones split into clauses before a first-person subject; a leading greeting
    or address removed; greetings, small talk and fragments without a content word dropped,
    and (FILTER_FILLER) the filler `filler` names.
    Questions are dropped, except that "my dog Rex" (a pet or a person named after "my") in a
    question becomes "I have a dog named Rex".

    >>> candidates("Hi John! I adopted a dog last week, his name is Buddy. How are you?")
    ['I adopted a dog last week, his name is Buddy']
    >>> candidates("I moved to Lisbon in March and I started a new job at a bank; my wife loves it.")
    ['I moved to Lisbon in March', 'I started a new job at a bank', 'my wife loves it']
    >>> candidates("Haha ok. Sure, sounds good! Thanks!"), candidates("My wife and I moved to Oslo")
    ([], ['My wife and I moved to Oslo'])
    >>> candidates("Should I take my dog Rex to the vet?")
    ['I have a dog named Rex']
    """
    text = _clean(text, MAX_INPUT_CHARS)
    out: list[str] = []
    seen: set[str] = set()
    for sentence in _sentences(text):
        if len(out) >= MAX_CANDIDATES:
            break
        if not sentence:
            continue
        if "?" in sentence[-3:]:
            pieces = _question_facts(sentence)
        else:
            pieces = _clauses(_strip_lead(sentence[:MAX_SENTENCE_CHARS]))
        for piece in pieces:
            piece = _TRAILING_LAUGH.sub("", _strip_lead(piece).rstrip(" .!,;:-\u2026"))
            piece = _bounded(piece.rstrip(" .!,;:-\u2026").strip())
            key = piece.casefold()
            if (_has_content(piece) and key not in seen and len(out) < MAX_CANDIDATES
                    and not (FILTER_FILLER and filler(piece))):
                seen.add(key)
                out.append(piece)
    return out


# --------------------------------------------------------------------------- rewrite

_ADVERBS = ("really|also|just|still|often|usually|always|never|sometimes|rarely|barely|hardly|"
            "actually|recently|finally|now|even|only|mostly|truly|totally|definitely|probably|"
            "personally|absolutely|seriously|literally|kinda|sort of|kind of|already|once|first|"
            "currently|mainly|especially|generally|honestly|absolutely|too")
_UNCHANGED = set("""
can could will would shall should may might must ought used was were did had dare
""".split())
_PAST = set("""
went got made saw bought met took left came found said told gave ran ate drove wrote felt
thought knew began became brought built caught chose drew drank fell fought flew forgot forgave
grew heard held kept lost paid rode rang rose sang sat sent slept spent spoke stood stole stuck
swam taught threw understood woke won wore hung lit led meant sold shot shook sought struck
swore tore fed fled bent lent dug slid spun sprang stung bit hid blew broke froze burnt learnt
dreamt spelt spilt smelt dealt knelt leapt crept wept swept put read cut hit let set quit hurt
cost shut spread split bet burst cast fit
""".split())
_NOT_VERBS = set("""
on in at the a an and or but to too of for with from as who that which than then when if
because so not alone myself yourself here there now too also either neither
""".split())
_PRESENT_EED = {"need", "feed", "succeed", "proceed", "exceed", "bleed", "breed", "speed", "heed",
                "seed", "weed", "embed", "shed", "wed"}
_PARTICIPLES = set("""
been had gone done seen got gotten known broken taken given eaten driven written spoken chosen
forgotten fallen flown grown shown thrown worn begun sung swum drunk ridden stolen woken frozen
hidden bitten beaten made met found left lost kept heard told
""".split())
_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "be": "is", "am": "is", "are": "is",
              "wanna": "wants to", "gotta": "has to", "don't": "doesn't", "haven't": "hasn't",
              "aren't": "isn't"}


def third_person_verb(word: str) -> str:
    """`word`, a verb after "I", in the form it takes after a third-person singular subject.

    >>> [third_person_verb(w) for w in ("love", "have", "go", "study", "play", "watch", "need")]
    ['loves', 'has', 'goes', 'studies', 'plays', 'watches', 'needs']
    >>> [third_person_verb(w) for w in ("moved", "was", "can", "can't", "agreed", "2")]
    ['moved', 'was', 'can', "can't", 'agreed', '2']
    """
    low = word.lower()
    if low in _IRREGULAR:
        new = _IRREGULAR[low]
        return new[0].upper() + new[1:] if word[:1].isupper() else new
    if (low in _UNCHANGED or low in _PAST or low in _NOT_VERBS or "'" in low or not low.isalpha()
            or (low.endswith("ed") and low not in _PRESENT_EED)):
        return word
    if re.search(r"[^aeiou]y$", low):
        return word[:-1] + "ies"
    if re.search(r"(?:s|sh|ch|x|z|o)$", low):
        return word + "es"
    return word + "s"


def _compound_subject(before: str) -> bool:
    """True for "my wife and " before "I": "and" ends a noun phrase with no verb of its own."""
    m = re.search(r"\b(?:and|or|nor)\s*$", before, re.I)
    if not m:
        return False
    phrase = re.split(r"[,;:.!?]", before[:m.start()])[-1]
    return bool(phrase.strip()) and not _VERBISH.search(phrase)


def _i_verb(m: re.Match, name: str) -> str:
    adverbs, verb = m["adv"] or "", m["verb"]
    if _compound_subject(m.string[:m.start()]):  # "my wife and I love": the verb stays plural
        return f"{name}{adverbs} {verb}"
    return f"{name}{adverbs} {third_person_verb(verb)}"


def _i_would(m: re.Match, name: str) -> str:
    word = m["next"].lower()
    had = word in _PARTICIPLES or (word.endswith("ed") and word not in _PRESENT_EED)
    return f"{name} {'had' if had else 'would'}{m['adv'] or ''} {m['next']}"


_SELF = "\x00"  # the speaker while rewriting (`_clean` removes NULs from the input)


def _person(text: str, speaker: str) -> str:
    name, poss = _SELF, f"{_SELF}'s"
    adv = rf"(?P<adv>(?:\s+(?i:{_ADVERBS}))*)"
    i = r"\b[Ii]"
    rules: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
        (rf"{i}\s*'\s*m\b|{i}\s+am\b", f"{name} is"),
        (rf"{i}'ve\b", f"{name} has"),
        (rf"{i}'ll\b", f"{name} will"),
        (rf"{i}'d{adv}\s+(?P<next>[\w']+)", lambda m: _i_would(m, name)),
        (rf"{i}'d\b", f"{name} would"),
        (rf"{i}{adv}\s+(?P<verb>[A-Za-z]+(?:'[a-z]+)?)\b", lambda m: _i_verb(m, name)),
        (rf"{i}\b(?![.'-]\w)", name),
        (r"\b[Mm]yself\b|\b[Oo]urselves\b", "themselves"),
        (r"\b[Mm]y\b|\b[Mm]ine\b|\b[Oo]urs?\b", poss),
        (r"\b[Mm]e\b", name),
        (r"\b([Ww]e)'re\b", f"{name} and others are"),
        (r"\b([Ww]e)'ve\b", f"{name} and others have"),
        (r"\b([Ww]e)'ll\b", f"{name} and others will"),
        (r"\b([Ww]e)'d\b", f"{name} and others would"),
        (r"\b[Ww]e\b|\b[Uu]s\b", f"{name} and others"),
    ]
    for pattern, repl in rules:
        text = re.sub(pattern, repl, text)
    return text.replace(_SELF, speaker)


def _speaker_name(speaker) -> str:
    name = _clean(speaker, MAX_SPEAKER_CHARS).replace("\n", " ").strip() if isinstance(speaker, str) else ""
    return name or DEFAULT_SPEAKER


def rewrite(candidate: str, speaker: str, time=None) -> str:
    """`candidate` (a statement in the speaker's own words) as a third-person fact about
    `speaker`, relative dates resolved against `time` (a LoCoMo or ISO time string, a
    date/datetime, or None to leave them as they are). Never raises; "" for empty input.

    >>> rewrite("I adopted a dog from the shelter last week, his name is Buddy", "Sam", "1:56 pm on 8 May, 2023")
    'Sam adopted a dog from the shelter the week before 8 May 2023, his name is Buddy.'
    >>> for p in ("yesterday", "last week", "last year", "next month", "two days ago",
    ...           "this weekend", "tomorrow", "last Friday"):
    ...     print(rewrite(f"I'm in Oslo {p}", "Sam", "1:56 pm on 8 May, 2023"))
    Sam is in Oslo on 7 May 2023.
    Sam is in Oslo the week before 8 May 2023.
    Sam is in Oslo in 2022.
    Sam is in Oslo in June 2023.
    Sam is in Oslo on 6 May 2023.
    Sam is in Oslo on the weekend of 13 May 2023.
    Sam is in Oslo on 9 May 2023.
    Sam is in Oslo on 5 May 2023.
    >>> rewrite("Hey Jon, I love hiking and my dog loves it too", "Ann")
    "Ann loves hiking and Ann's dog loves it too."
    >>> rewrite("I'm allergic to nuts", "Ann"), rewrite("I've been to Oslo yesterday", "Ann")
    ('Ann is allergic to nuts.', 'Ann has been to Oslo yesterday.')
    >>> rewrite("I don't eat meat, I was vegan and I can cook", "Ann")
    "Ann doesn't eat meat, Ann was vegan and Ann can cook."
    >>> rewrite("I'd love to visit, I'd been there", "Ann"), rewrite("my wife and I love it", "Ann")
    ('Ann would love to visit, Ann had been there.', "Ann's wife and Ann love it.")
    >>> rewrite("we moved here next month with our kids", "Ann", "2024-03-01T10:00:00")
    "Ann and others moved here in April 2024 with Ann's kids."
    >>> rewrite("I really study hard and you help me", "Ann")
    'Ann really studies hard and you help Ann.'
    """
    text = _clean(candidate, 4 * MAX_CANDIDATE_CHARS).replace("\n", " ").strip()
    text = _strip_lead(text).rstrip(" .!,;:-\u2026").strip()
    if not text:
        return ""
    text = resolve_relative_dates(text, parse_turn_time(time))
    text = _person(text, _speaker_name(speaker))
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:] + ("" if text.endswith("?") else ".")


# --------------------------------------------------------------------------- the choice step

CHOICE_SYSTEM = """\
You choose what to remember about a person. You are given numbered statements that the \
person said in a conversation.
Keep the statements that tell a lasting fact about the person: who they are, family, friends \
and pets, places, work, health, plans, events, activities and likes.
Leave out greetings, thanks, small talk and remarks about the conversation.
Reply with JSON only: {"keep": [the numbers of the statements to keep]}. An empty list is fine."""

# The prompt numbers statements from 1 and the schema's enum follows it: numbered from 0, the
# embedded 135M skipped statement 0 in every multi-statement turn we tried (it still answered
# [1, ...]); `parse_choice` maps the numbers back to 0-based indices into the candidates.
FIRST_NUMBER = 1


def choice_messages(cands: Sequence[str], speaker: str, time=None) -> list[dict]:
    """The chooser's prompt: a fixed system message (its KV cache is reused between turns),
    then the speaker, the time and the numbered candidates.

    >>> m = choice_messages(["I got a beagle named Scout"], "Sam", "8 May, 2023")
    >>> m[0]["role"], m[1]["content"].splitlines()[-1]
    ('system', '1. I got a beagle named Scout')
    """
    numbered = "\n".join(f"{i + FIRST_NUMBER}. {c}" for i, c in enumerate(cands))
    user = f"Speaker: {_speaker_name(speaker)}\nTime: {time or 'unknown'}\nStatements:\n{numbered}"
    return [{"role": "system", "content": CHOICE_SYSTEM}, {"role": "user", "content": user}]


def choice_schema(n: int) -> dict:
    """JSON schema of the choice: `{"keep": [statement numbers, at most n]}`, the numbers
    being those `choice_messages` shows (FIRST_NUMBER .. n - 1 + FIRST_NUMBER).

    The numbers are an integer enum (llama.cpp's grammar converter ignores minimum/maximum),
    so a grammar-constrained model cannot name a statement that does not exist. Uniqueness is
    declared but not enforced by the grammar; `parse_choice` refuses duplicates.
    Raises ValueError for n < 1 (nothing to choose: do not call the model).

    >>> choice_schema(2)["properties"]["keep"]["items"]
    {'type': 'integer', 'enum': [1, 2]}
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"choice_schema needs at least one candidate, got {n!r}")
    return {
        "type": "object",
        "properties": {"keep": {"type": "array",
                                "items": {"type": "integer", "enum": list(range(FIRST_NUMBER, n + FIRST_NUMBER))},
                                "uniqueItems": True, "maxItems": n}},
        "required": ["keep"],
        "additionalProperties": False,
    }


def _check_indices(keep, n: int, raw: str = "", first: int = 0) -> list[int]:
    """`keep` as 0-based indices, after checking it is a list of unique ints in first..first+n-1."""
    if not isinstance(keep, list):
        raise ModelOutputError(f"choice is not a list of indices: {type(keep).__name__}", raw)
    for k in keep:
        if type(k) is not int:  # bool, float and str are refused, never coerced
            raise ModelOutputError(f"choice index is not an integer: {type(k).__name__}", raw)
        if not first <= k < first + n:
            raise ModelOutputError(f"choice index {k} is out of range {first}..{first + n - 1}", raw)
    if len(set(keep)) != len(keep):
        raise ModelOutputError(f"choice repeats an index: {keep!r:.80}", raw)
    return [k - first for k in keep]


def parse_choice(raw: str, n: int) -> list[int]:
    """The 0-based candidate indices named by the model's `{"keep": [...]}` reply (whose
    numbers start at FIRST_NUMBER, as in the prompt), in the order given.

    Raises ModelOutputError (with `raw`) for anything else: not JSON, not that object, extra
    keys, a number that is not an int (floats, strings, booleans), out of range, or repeated.

    >>> parse_choice('{"keep": [3, 1]}', 3), parse_choice('{"keep": []}', 3)
    ([2, 0], [])
    >>> parse_choice('{"keep": ["1"]}', 3)
    Traceback (most recent call last):
    core.errors.ModelOutputError: choice index is not an integer: str
    """
    if not isinstance(raw, str):
        raise ModelOutputError(f"choice is not text: {type(raw).__name__}", repr(raw)[:200])
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ModelOutputError(f"choice is not JSON: {exc}", raw) from None
    if not isinstance(value, dict) or set(value) != {"keep"}:
        raise ModelOutputError('choice is not {"keep": [...]}', raw)
    return _check_indices(value["keep"], n, raw, FIRST_NUMBER)


def keep_all(cands: Sequence[str]) -> list[int]:
    """The chooser that keeps every candidate (a baseline, and for tests)."""
    return list(range(len(cands)))


def model_chooser(backend: ChatBackend, speaker: str, time=None, *, max_tokens: int | None = None,
                  on_raw: Callable[[str], None] | None = None) -> Callable[[Sequence[str]], list[int]]:
    """A chooser backed by a `ChatBackend`: greedy, grammar-constrained by `choice_schema`.

    Runs on the calling thread (the backend's own lock applies). `on_raw` receives the raw
    reply (for a log). Raises ModelOutputError when the reply does not parse (a truncated
    reply included) and whatever the backend raises.
    """
    def choose(cands: Sequence[str]) -> list[int]:
        n = len(cands)
        params = GenParams(temperature=0.0, max_tokens=max_tokens or 16 + 4 * n)
        raw = "".join(backend.complete(choice_messages(cands, speaker, time), params=params,
                                       schema=choice_schema(n)))
        if on_raw is not None:
            on_raw(raw)
        return parse_choice(raw, n)

    return choose


_FIRST_PERSON_START = re.compile(r"\s*(?:I|I'm|I've|I'd|I'll|My)\b")
_TAUTOLOGY = re.compile(r"\s*(\w[\w' -]*?)\s+(?:is|are)\s+\1\s*[.!]?\s*", re.IGNORECASE)


def is_tautology(fact: str) -> bool:
    """Whether a fact only says that someone is themselves ("Sam is Sam.", from "I'm Sam").

    >>> is_tautology("Sam is Sam."), is_tautology("Sam is a nurse.")
    (True, False)
    """
    return _TAUTOLOGY.fullmatch(fact) is not None


def as_third_person(text: str, speaker: str | None) -> str:
    """A model-written fact that starts in the first person ("I live in Lisbon.") rewritten
    about `speaker` like the extractive facts (`rewrite`, no date resolution); unchanged when
    it does not start so (quoted speech "Ann said: I ..." stays) or no speaker is known.

    >>> as_third_person("I live in Lisbon.", "Sam"), as_third_person("Ann likes tea.", "Sam")
    ('Sam lives in Lisbon.', 'Ann likes tea.')
    """
    if not speaker or not _FIRST_PERSON_START.match(text):
        return text
    return rewrite(text, speaker) or text


def extract_facts(text: str, speaker: str, time, choose: Callable[[list[str]], list[int]]) -> list[str]:
    """The turn's facts: `candidates(text)` -> `choose` -> `rewrite`, in text order, unique.

    `choose` is not called when there is no candidate. Its result is checked like a model's:
    ModelOutputError when it is not a list of unique valid indices.

    >>> extract_facts("Hi! I got a beagle named Scout. Sounds fun!", "Sam", None, keep_all)
    ['Sam got a beagle named Scout.']
    >>> extract_facts("Haha ok.", "Sam", None, lambda c: 1 / 0)
    []
    """
    cands = candidates(text)
    if not cands:
        return []
    keep = _check_indices(choose(list(cands)), len(cands))
    facts: list[str] = []
    for k in sorted(keep):
        fact = rewrite(cands[k], speaker, time)
        if fact and fact not in facts and not is_tautology(fact):
            facts.append(fact)
    return facts
