"""Errors split in two (qutebrowser's KnownError/BugError, simonw/llm's ModelError).

`UserError` and its subclasses carry one sentence a person can act on; the CLI prints it on
stderr and exits non-zero, the GUI shows it in a plain dialog. Anything else is a bug: a
traceback in the log and a crash dialog.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix. `str(err)` is the one-line message shown to them."""

    exit_code = 1


class NotFoundError(UserError):
    """An id (memory, event, conversation) that does not exist."""


class ConflictError(UserError):
    """Optimistic-concurrency failure: the row changed since it was read."""


class InvalidInputError(UserError):
    """Bad input from the user: empty text, a bad option value..."""


class DatabaseError(UserError):
    """Base for database problems the user can act on."""


class DatabaseLockedError(DatabaseError):
    """Another process holds a write lock for longer than the busy timeout."""


class DatabaseCorruptError(DatabaseError):
    """The file is not a database or fails its integrity check. It is never overwritten."""


class DiskFullError(UserError):
    """The disk is full: the file (database, settings, export...) was not written."""


class DatabaseFullError(DiskFullError, DatabaseError):
    """The disk under the memory database is full (SQLITE_FULL, or a write failing with ENOSPC)."""


class DatabaseReadOnlyError(DatabaseError):
    """The database or its folder cannot be written: it is opened read-only (reads still work)."""


class DataFolderGoneError(DatabaseError):
    """The data folder was deleted or moved while the app had the database open."""


class SchemaTooNewError(DatabaseError):
    """The database was written by a newer version of Memory-R1."""


class ImportFormatError(UserError):
    """An import file with a bad line; nothing was imported."""


class ModelLoadError(UserError):
    """A GGUF that is missing, not GGUF, truncated, or does not fit in memory."""


class ModelOutputError(Exception):
    """A model produced output that does not parse or validate (after the retry).

    Not a UserError: it is logged with the raw output; callers decide what to do.
    """

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


class Cancelled(Exception):
    """Raised inside a generation loop when its CancelToken was set (where not simply stopping)."""
