"""Logging: everything goes to a rotating file in the data dir; warnings also to stderr (CLI).

A data dir where the log cannot be written (read-only folder or mount, full disk) does not stop
the app: logging then goes to stderr only, said once in one line, and `setup_logging` returns
None instead of the file's path.

No memory, message or model text is logged there (only ids, counts, lengths and reasons). The
debug switch `MEMORY_R1_LOG_TEXT=1` (read by each `setup_logging` call) also writes that text,
and only that, to `logs/text.log` (`core.textlog`); forgetting a memory or purging a chat
empties it."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from core.paths import log_dir
from core.textlog import TEXT_LOG_NAME, add_text_handler, remove_text_handlers, text_logging_requested

LOG_NAME = "memory-r1.log"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is *now*: a handler bound to a stream that was later
    closed or replaced (test capture, a detached terminal) would raise on every record."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(base: Path | None = None, *, verbose: bool = False, stderr: bool = True) -> Path | None:
    root = logging.getLogger()
    remove_app_handlers()
    path: Path | None
    try:
        path = log_dir(base) / LOG_NAME
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    except OSError as exc:
        path = None
        stderr = True
        print(f"warning: cannot write the log file ({exc.strerror or exc}); logging to the terminal only",
              file=sys.stderr)
    else:
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        fh._memory_r1 = True  # type: ignore[attr-defined]
        root.addHandler(fh)
        if text_logging_requested():
            _add_text_log(path.parent)
    if stderr:
        sh = _StderrHandler()
        sh.setLevel(logging.DEBUG if verbose else logging.WARNING)
        sh.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        sh._memory_r1 = True  # type: ignore[attr-defined]
        root.addHandler(sh)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return path


def _add_text_log(folder: Path) -> None:
    """The debug switch: `core.textlog`'s records to `folder/text.log` (owner-only, like the rest)."""
    try:
        th = logging.handlers.RotatingFileHandler(folder / TEXT_LOG_NAME, maxBytes=5_000_000, backupCount=1,
                                                  encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the text log (%s); it stays off", exc.strerror or exc)
        return
    th.setFormatter(logging.Formatter("%(asctime)s %(threadName)s: %(message)s"))
    add_text_handler(th)


def remove_app_handlers() -> None:
    """Detach and close the handlers `setup_logging` added (tests; re-configuration); the text
    log is switched off again."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_memory_r1", False):
            root.removeHandler(h)
            h.close()
    remove_text_handlers()
