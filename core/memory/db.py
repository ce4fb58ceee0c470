"""The SQLite connection: sqlean (a current SQLite with FTS5) + the sqlite-vec extension.

One connection per `MemoryBank`, opened with `check_same_thread=False`; the bank guards it
with an `RLock`, so any thread may call. Autocommit mode (`isolation_level=None`): every
write goes through `transaction()`, which is `BEGIN IMMEDIATE ... COMMIT` (rolled back on any
exception), so a write either lands whole or not at all, even if the process is killed.

`translate_errors()` maps SQLite failures a person can act on to `core.errors` types:
busy/locked -> DatabaseLockedError, not-a-database/malformed -> DatabaseCorruptError (the
file is never rewritten), disk full (SQLITE_FULL, or a disk I/O error with the disk out of
space) -> DatabaseFullError, read-only -> DatabaseReadOnlyError, cannot open -> DatabaseError.

Environment faults: a database or folder that cannot be written is opened read-only
(`mode=ro`, reads work, every write is one DatabaseReadOnlyError); a data folder deleted or
moved while open is noticed before each write transaction (DataFolderGoneError: SQLite
would otherwise write on into the deleted file); the first open of a fresh file by two
processes at once retries SQLite's busy answers (the WAL switch does not wait on the busy
timeout) until `timeout`; `check_writable()` lets a caller learn of a lock or a read-only
file before slow work (loading a model), in at most `timeout`.

Deleted text does not linger: every connection runs with `PRAGMA secure_delete = ON` (freed
cells and pages are zeroed), and `checkpoint()` copies the WAL into the file and truncates it,
so the old page images that still hold the text leave the `-wal` file too (forget, chat purge).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import sqlean as sqlite3

from core.errors import (
    DatabaseCorruptError,
    DatabaseError,
    DatabaseFullError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DataFolderGoneError,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # sqlean ships no type information; its classes have the stdlib sqlite3 API
    from sqlite3 import Connection, Cursor
    from sqlite3 import Error as SqliteError
else:
    Connection = sqlite3.Connection
    Cursor = sqlite3.Cursor
    SqliteError = sqlite3.Error

MMAP_BYTES = 512 * 1024 * 1024


@functools.cache
def vec0_path() -> str:
    """sqlite-vec's loadable extension, as `sqlite_vec.loadable_path()` gives it, found without
    importing the package when its folder has the file: sqlite_vec's `__init__` imports numpy
    (~80 ms of CPU) for a helper not used here, and opening a bank is on the app's start-up path."""
    spec = importlib.util.find_spec("sqlite_vec")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if any(Path(folder).glob("vec0.*")):
            return os.path.normpath(os.path.join(folder, "vec0"))
    import sqlite_vec

    return sqlite_vec.loadable_path()
_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_CORRUPT = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}
LOW_SPACE_BYTES = 1 << 20  # a disk I/O error with less free space than this is a full disk


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
    io_error = name == "SQLITE_IOERR" or "disk i/o error" in low
    if name == "SQLITE_FULL" or "disk is full" in low or (io_error and _low_space(path)):
        return DatabaseFullError(f"The disk is full: the last change to {path} was not saved; "
                                 "free some space and try again.")
    if name == "SQLITE_READONLY" or "readonly database" in low or "read-only" in low:
        return DatabaseReadOnlyError(
            f"The memory database {path} cannot be written (read-only file or folder): Memory-R1 "
            "can show your memories but not change them; check the folder's permissions.")
    if name == "SQLITE_CANTOPEN" or "unable to open database" in low:
        return DatabaseError(f"Cannot open the memory database {path}; check the folder exists and is writable.")
    if io_error:
        return DatabaseError(f"A disk error occurred while using {path} ({msg}); check the disk.")
    return exc


def inserted_id(cur: Cursor) -> int:
    """The rowid of the row the INSERT just run on `cur` wrote."""
    rowid = cur.lastrowid
    if rowid is None:  # only before any INSERT on this cursor: a bug
        raise RuntimeError("the statement inserted no row")
    return int(rowid)


def _low_space(path: str | Path) -> bool:
    """Whether the disk holding `path` has (almost) no free space left."""
    folder = Path(path).parent
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked/busy" answer."""
    return _error_name(exc) in _LOCKED or "database is locked" in str(exc).lower()


def retry_busy(fn, timeout: float):
    """`fn()`, retried with a bounded backoff (10 ms doubling to 250 ms) while SQLite answers
    busy, for at most `timeout` seconds; then the last busy error propagates."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def writable(path: str | Path) -> bool:
    """Whether the database file (or, for a new one, its folder) can be written."""
    path = Path(path)
    if str(path) == ":memory:":
        return True
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent if path.parent.exists() else path.parent.parent, os.W_OK)


def check_writable(path: str | Path, *, timeout: float = 5.0) -> None:
    """Raise the sentence a write to the database at `path` would end in, now: read-only
    (DatabaseReadOnlyError) or locked by another process for longer than `timeout`
    (DatabaseLockedError). Takes and releases the write lock; writes nothing."""
    path = Path(path)
    if not writable(path):
        raise to_user_error(sqlite3.OperationalError("attempt to write a readonly database"), path)
    with translate_errors(path):
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()


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


def _open(path: Path, timeout: float, readonly: bool) -> Connection:
    if not readonly:
        return sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", timeout=timeout, isolation_level=None,
                               check_same_thread=False, uri=True)
        conn.execute("PRAGMA schema_version").fetchone()
        return conn
    except sqlite3.OperationalError as exc:  # a WAL file whose -shm cannot be created
        if _error_name(exc) != "SQLITE_CANTOPEN" and "unable to open" not in str(exc).lower():
            raise
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", timeout=timeout, isolation_level=None,
                               check_same_thread=False, uri=True)


def connect(path: str | Path, *, timeout: float = 5.0, readonly: bool | None = None) -> Connection:
    """Open (creating if missing) the database at `path` with WAL, busy timeout and foreign keys.

    `readonly=None`: read-only when the file or folder cannot be written (see the module
    docstring). Raises DatabaseCorruptError for a file that is not a SQLite database (never
    rewriting it), DatabaseLockedError when switching to WAL is blocked for longer than `timeout`.
    """
    path = Path(path)
    if readonly is None:
        readonly = not writable(path)
    with translate_errors(path):
        if readonly:
            log.info("%s cannot be written: opening it read-only", path)
        conn = _open(path, timeout, readonly)
        try:
            conn.enable_load_extension(True)
            conn.load_extension(vec0_path())  # what sqlite_vec.load(conn) does
            conn.enable_load_extension(False)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if readonly:
                conn.execute("PRAGMA query_only = ON")

            def header_and_wal():  # the header first: a garbage file fails here, before any write
                conn.execute("PRAGMA schema_version").fetchone()
                return conn.execute("PRAGMA journal_mode").fetchone()[0] if readonly else \
                    conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]

            mode = retry_busy(header_and_wal, timeout)
            if str(mode).lower() != "wal" and str(path) != ":memory:" and not readonly:
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
        self._inode = _inode(path)

    def check_folder(self) -> None:
        """DataFolderGoneError when the database file was deleted or replaced since the open
        (SQLite would write on into the deleted file and the change would be lost)."""
        if self._inode is not None and _inode(self.path) != self._inode:
            raise DataFolderGoneError(
                f"The data folder {Path(self.path).parent} was deleted or moved while Memory-R1 was "
                "running; nothing was saved: put it back, or restart Memory-R1 to start a new one.")

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Connection]:
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.check_folder()
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


def _inode(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None for ":memory:" or a missing file."""
    if str(path) == ":memory:":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
