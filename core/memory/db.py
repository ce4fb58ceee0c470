"""The SQLite connection: sqlean (a current SQLite with FTS5) + the sqlite-vec extension.

One connection per `MemoryBank`, opened with `check_same_thread=False`; the bank guards it
with an `RLock`, so any thread may call. Autocommit mode (`isolation_level=None`): every
write goes through `transaction()`, which is `BEGIN IMMEDIATE ... COMMIT` (rolled back on any
exception), so a write either lands whole or not at all, even if the process is killed.

`translate_errors()` maps SQLite failures a person can act on to `core.errors` types:
busy/locked -> DatabaseLockedError, not-a-database/malformed -> DatabaseCorruptError (the
file is never rewritten), disk full / read-only / cannot open -> DatabaseError.

Deleted text does not linger: every connection runs with `PRAGMA secure_delete = ON` (freed
cells and pages are zeroed), and `checkpoint()` copies the WAL into the file and truncates it,
so the old page images that still hold the text leave the `-wal` file too (forget, chat purge).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import sqlean as sqlite3
import sqlite_vec

from core.errors import DatabaseCorruptError, DatabaseError, DatabaseLockedError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # sqlean ships no type information; its classes have the stdlib sqlite3 API
    from sqlite3 import Connection, Cursor
    from sqlite3 import Error as SqliteError
else:
    Connection = sqlite3.Connection
    Cursor = sqlite3.Cursor
    SqliteError = sqlite3.Error

MMAP_BYTES = 512 * 1024 * 1024
_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_CORRUPT = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def now_iso() -> str:
    """The current time as ISO-8601 UTC with milliseconds, e.g. `2025-01-02T03:04:05.678+00:00`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _error_name(exc: BaseException) -> str:
    """The primary result code name: `SQLITE_BUSY_SNAPSHOT` -> `SQLITE_BUSY`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return "_".join(name.split("_")[:2])


def to_user_error(exc: Exception, path: str | Path) -> Exception:
    """The `core.errors` exception for a sqlite error, or `exc` itself when it is a bug."""
    name = _error_name(exc)
    msg = str(exc)
    low = msg.lower()
    if name in _LOCKED or "database is locked" in low or "database table is locked" in low:
        return DatabaseLockedError(
            f"The memory database {path} is locked by another program (another Memory-R1 "
            "window or command?); close it or try again in a moment."
        )
    if name in _CORRUPT or "not a database" in low or "malformed" in low:
        return DatabaseCorruptError(
            f"The memory database {path} is damaged ({msg}); it was left untouched: "
            "restore a backup, or move the file away to start a new one."
        )
    if name == "SQLITE_FULL" or "disk is full" in low:
        return DatabaseError(f"The disk is full; the last change to {path} was not saved.")
    if name == "SQLITE_READONLY" or "readonly database" in low:
        return DatabaseError(f"The memory database {path} is read-only; check its permissions.")
    if name == "SQLITE_CANTOPEN" or "unable to open database" in low:
        return DatabaseError(f"Cannot open the memory database {path}; check the folder exists and is writable.")
    if name == "SQLITE_IOERR" or "disk i/o error" in low:
        return DatabaseError(f"A disk error occurred while using {path} ({msg}).")
    return exc


def inserted_id(cur: Cursor) -> int:
    """The rowid of the row the INSERT just run on `cur` wrote."""
    rowid = cur.lastrowid
    if rowid is None:  # only before any INSERT on this cursor: a bug
        raise RuntimeError("the statement inserted no row")
    return int(rowid)


@contextlib.contextmanager
def translate_errors(path: str | Path) -> Iterator[None]:
    """Re-raise sqlite errors a person can act on as `core.errors.DatabaseError`s."""
    try:
        yield
    except sqlite3.Error as exc:
        mapped = to_user_error(exc, path)
        if mapped is exc:
            raise
        raise mapped from exc


def connect(path: str | Path, *, timeout: float = 5.0) -> Connection:
    """Open (creating if missing) the database at `path` with WAL, busy timeout and foreign keys.

    Raises DatabaseCorruptError for a file that is not a SQLite database (never rewriting
    it), DatabaseLockedError when switching to WAL is blocked for longer than `timeout`.
    """
    path = Path(path)
    with translate_errors(path):
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.enable_load_extension(True)
            sqlite_vec.load(conn)
            conn.enable_load_extension(False)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            # reading the header first: a garbage file fails here, before any write
            conn.execute("PRAGMA schema_version").fetchone()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal" and str(path) != ":memory:":
                log.warning("could not switch %s to WAL (journal_mode=%s)", path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            # reads of the vector chunks (150 MB at 100k memories) go through mmap, not the page cache
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            conn.execute("PRAGMA cache_size = -32768")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
        except BaseException:
            conn.close()
            raise
    return conn


def checkpoint(conn: Connection, why: str) -> bool:
    """`PRAGMA wal_checkpoint(TRUNCATE)` outside any transaction: the WAL's pages go into the
    file and the `-wal` file is emptied. False (logged) when another connection's read kept it
    from completing; the rest leaves the WAL at the next checkpoint. Never raises."""
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as exc:
        log.warning("%s: the WAL could not be checkpointed (%s)", why, _error_name(exc) or type(exc).__name__)
        return False
    if busy:
        log.warning("%s: the WAL could not be checkpointed now (another reader); old pages leave it "
                    "at the next checkpoint", why)
    return not busy


class Transactor:
    """`BEGIN IMMEDIATE`/`COMMIT` around a block; nested use joins the outer transaction."""

    def __init__(self, conn: Connection, path: str | Path) -> None:
        self.conn = conn
        self.path = path
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Connection]:
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        with translate_errors(self.path):
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            with translate_errors(self.path):
                self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
