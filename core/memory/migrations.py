"""Numbered schema migrations, recorded in `schema_migrations` and `PRAGMA user_version`.

`migrate(conn)` applies the missing ones in order, each in its own `BEGIN IMMEDIATE`
transaction (so two processes opening a fresh file at once cannot both apply it), and refuses
a database written by a newer Memory-R1 (`SchemaTooNewError`) without touching it.

Tables: `memories` is the source of truth; `memories_fts` (FTS5, external content kept in
step by triggers) and the sqlite-vec `memory_vectors` table are indexes. The vec0 table is
not created here: its dimension belongs to the embedder, so `core.memory.index` creates it
and records the embedder in `meta`. Add a migration by appending to `MIGRATIONS`; never edit
a released one.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import SchemaTooNewError

from core.memory.db import Connection, now_iso, retry_busy, translate_errors

FIRST_OPEN_RETRY_S = 1.0  # busy answers that did not wait (a first open racing another) are retried this long

_MEMORIES = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE memories (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL CHECK (length(text) > 0),
        text_key TEXT NOT NULL,
        speaker TEXT,
        observed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        source TEXT,
        status TEXT NOT NULL DEFAULT 'active'
            CHECK (status IN ('active', 'deleted', 'superseded')),
        version INTEGER NOT NULL DEFAULT 1
    )""",
    "CREATE INDEX memories_status_idx ON memories(status, id)",
    "CREATE INDEX memories_key_idx ON memories(text_key)",
    "CREATE INDEX memories_speaker_idx ON memories(speaker, status)",
    """CREATE TABLE memory_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch INTEGER NOT NULL,
        memory_id INTEGER,
        event TEXT NOT NULL,
        old_text TEXT,
        new_text TEXT,
        old_status TEXT,
        new_status TEXT,
        actor TEXT NOT NULL,
        at TEXT NOT NULL,
        turn TEXT,
        undone INTEGER NOT NULL DEFAULT 0,
        reverts INTEGER,
        origin TEXT
    )""",
    "CREATE INDEX memory_events_memory_idx ON memory_events(memory_id, id)",
    "CREATE INDEX memory_events_batch_idx ON memory_events(batch)",
    """CREATE VIRTUAL TABLE memories_fts USING fts5(
        text, content='memories', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    # deleted entries are removed from the index at once (forget leaves no tokens behind)
    "INSERT INTO memories_fts(memories_fts, rank) VALUES ('secure-delete', 1)",
    """CREATE TRIGGER memories_fts_ai AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER memories_fts_ad AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER memories_fts_au AFTER UPDATE OF text ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);
    END""",
)

_CHATS = (
    """CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        temporary INTEGER NOT NULL DEFAULT 0,
        deleted_at TEXT
    )""",
    "CREATE INDEX conversations_updated_idx ON conversations(updated_at)",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX messages_conversation_idx ON messages(conversation_id, id)",
)

# The Memory Manager's durable queue: one row per user message given to the manager, written
# in the message's own transaction; `done_at` is set in the transaction that applies the turn
# (outcome "applied"), or when the turn yielded nothing ("nothing") or failed ("failed").
# Temporary chats no longer live in the file: leftover rows are removed here.
_MANAGER_QUEUE = (
    """CREATE TABLE manager_queue (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        speaker TEXT,
        said_at TEXT,
        queued_at TEXT NOT NULL,
        done_at TEXT,
        outcome TEXT CHECK (outcome IN ('applied', 'nothing', 'failed'))
    )""",
    "CREATE INDEX manager_queue_pending_idx ON manager_queue(done_at, message_id)",
    "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE temporary = 1)",
    "DELETE FROM conversations WHERE temporary = 1",
)

# (number, name, statements): numbers are 1, 2, 3... in order
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "memories, events, keyword index", _MEMORIES),
    (2, "conversations and messages", _CHATS),
    (3, "the memory manager's durable queue", _MANAGER_QUEUE),
]
LATEST = MIGRATIONS[-1][0]


def schema_version(conn: Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(version: int, path: str | Path) -> None:
    if version > LATEST:
        raise SchemaTooNewError(
            f"The memory database {path} was written by a newer Memory-R1 (schema {version}, "
            f"this version knows up to {LATEST}); update Memory-R1 to open it."
        )


def migrate(conn: Connection, path: str | Path = "") -> int:
    """Bring the schema up to `LATEST`; return the version. Raises SchemaTooNewError.

    Race-safe: each migration re-reads the version inside its `BEGIN IMMEDIATE`, and a busy
    answer that came at once (two processes creating a fresh file) is retried with a bounded
    backoff for `FIRST_OPEN_RETRY_S`; a busy timeout that was waited out is not retried."""
    with translate_errors(path):
        return retry_busy(lambda: _migrate(conn, path), FIRST_OPEN_RETRY_S)


def _migrate(conn: Connection, path: str | Path) -> int:
    _check_not_newer(schema_version(conn), path)
    for number, name, statements in MIGRATIONS:
        if schema_version(conn) >= number:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)  # another process may have migrated meanwhile
            _check_not_newer(current, path)
            if current < number:
                _apply(conn, number, name, statements)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def _apply(conn: Connection, number: int, name: str, statements: tuple[str, ...]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for sql in statements:
        conn.execute(sql)
    conn.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                 (number, name, now_iso()))
    conn.execute(f"PRAGMA user_version = {int(number)}")
