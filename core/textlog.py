"""The text log: the one place where what people said, memories and model output may be logged.

The ordinary log (`<data dir>/logs/memory-r1.log`) never holds memory, message or model text:
its lines carry ids, counts, lengths and reasons. For debugging a model's output, call sites
also hand the text to `log_text`, which goes to the `memory_r1.text` logger. That logger does
not propagate and, unless `app.logs.setup_logging` found `MEMORY_R1_LOG_TEXT=1`, has no handler
and is switched off, so its records go nowhere. When on, they go to `<data dir>/logs/text.log`
alone, and `erase_text_log` (called by `MemoryBank.forget` and by purging a chat) empties that
file and deletes its rotated copies, so forgotten text does not survive there either.

`erase_lines` removes, from a line-history file such as the terminal chat's readline history
(`core.paths.CHAT_HISTORY_NAME`), the lines that carry forgotten text.

Thread-safety: `log_text` is as thread-safe as `logging`; `erase_text_log` takes each
handler's lock. None of them raises (a file that cannot be emptied is logged, without text).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import Iterable

TEXT_LOGGER = "memory_r1.text"
TEXT_LOG_NAME = "text.log"
ENV_LOG_TEXT = "MEMORY_R1_LOG_TEXT"
OFF = logging.CRITICAL + 10

text_log = logging.getLogger(TEXT_LOGGER)
text_log.propagate = False
text_log.setLevel(OFF)
text_log.addHandler(logging.NullHandler())

log = logging.getLogger(__name__)


def text_logging_requested() -> bool:
    """True when the environment asks for the text log (`MEMORY_R1_LOG_TEXT` = 1/true/yes/on)."""
    return os.environ.get(ENV_LOG_TEXT, "").strip().lower() in ("1", "true", "yes", "on")


def log_text(what: str, text: object) -> None:
    """`text` under the label `what` (e.g. "turn chat:3/7 extraction output") to the text log;
    nothing happens while the text log is off."""
    if text_log.isEnabledFor(logging.DEBUG):
        text_log.debug("%s: %r", what, text)


_handlers: list[logging.FileHandler] = []


def add_text_handler(handler: logging.FileHandler) -> None:
    """Switch the text log on, writing to `handler`'s file (app.logs does this)."""
    _handlers.append(handler)
    text_log.addHandler(handler)
    text_log.setLevel(logging.DEBUG)


def remove_text_handlers() -> None:
    """Switch the text log off again, closing the handlers `add_text_handler` attached."""
    while _handlers:
        h = _handlers.pop()
        text_log.removeHandler(h)
        h.close()
    text_log.setLevel(OFF)


def erase_text_log(*folders: str | os.PathLike) -> int:
    """Empty the text log files of this process's handlers and `<folder>/text.log` for each of
    `folders` (another process may have written one), and delete their rotated copies
    (`text.log.1`, ...). The files are truncated, not deleted, so a process still appending to
    one keeps writing to the visible file. Returns how many files were emptied or deleted."""
    handlers = list(_handlers)
    for h in handlers:
        h.acquire()
    try:
        for h in handlers:
            if h.stream is not None:  # reopened (appending) at the next record
                h.stream.close()
                h.stream = None
        targets = {Path(h.baseFilename) for h in handlers} | {Path(f) / TEXT_LOG_NAME for f in folders}
        return sum(_erase_one(target) for target in sorted(targets))
    finally:
        for h in handlers:
            h.release()


def _erase_one(target: Path) -> int:
    done = 0
    try:
        if target.exists():
            os.truncate(target, 0)
            done += 1
        for backup in target.parent.glob(target.name + ".*"):
            backup.unlink()
            done += 1
    except OSError as exc:
        log.warning("the text log %s could not be emptied (%s)", target, exc.strerror or type(exc).__name__)
    return done


_LIBEDIT_MAGIC = b"_HiStOrY_V2_"
_OCTAL = re.compile(rb"\\([0-7]{3})")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _line_text(raw: bytes, libedit: bool) -> str:
    if libedit:  # libedit writes each line vis-encoded (a space is \040)
        raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw)
    return _norm(raw.decode("utf-8", errors="replace"))


MIN_CONTAINED_CHARS = 12


def _carries(line: str, keys: set[str]) -> bool:
    return bool(line) and any(line == k or (len(k) >= MIN_CONTAINED_CHARS and k in line) for k in keys)


def erase_lines(path: str | os.PathLike, texts: Iterable[str]) -> int:
    """Remove from the line-history file `path` (GNU readline's plain lines or libedit's
    encoded ones) every line that is one of `texts` or, for a text of at least
    `MIN_CONTAINED_CHARS` characters, contains it; compared case- and whitespace-insensitively
    (empty texts are ignored; a short text must be the whole line, so "ok" does not remove
    "I booked it"). The file is rewritten in place,
    keeping its mode; a missing file is fine. A process that still holds the history in
    memory (a chat open meanwhile) writes it back when it exits: the caller cannot prevent
    that. Returns how many lines were removed; never raises (a failure is logged, no text)."""
    keys = {k for k in (_norm(t) for t in texts if t) if k}
    target = Path(path)
    if not keys or not target.is_file():
        return 0
    try:
        lines = target.read_bytes().split(b"\n")
        libedit = bool(lines) and lines[0].rstrip(b"\r") == _LIBEDIT_MAGIC
        kept = [raw for i, raw in enumerate(lines)
                if (libedit and i == 0) or not _carries(_line_text(raw, libedit), keys)]
        removed = len(lines) - len(kept)
        if removed:
            with open(target, "r+b") as out:  # in place: the file keeps its mode and owner
                out.write(b"\n".join(kept))
                out.truncate()
                out.flush()
                os.fsync(out.fileno())
        return removed
    except OSError as exc:
        log.warning("the line history %s could not be cleaned (%s)", target, exc.strerror or type(exc).__name__)
        return 0
