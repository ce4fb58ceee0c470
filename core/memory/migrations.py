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

# Provenance (core.memory.sources): `sources` holds each turn a memory came from (a chat turn
# names its message, whose text stays in `messages` and is read by join; `message_id` becomes
# NULL when the message is purged; any other turn keeps its text and is unique by `ref`);
# `memory_sources` links memories to sources (many-to-many, `source_id` NULL for the user's
# own edit or addition; `event_id` is the event that made the link, so undo can drop it).
# `memories.superseded_by` names the newer memory that replaced a superseded one;
# `memory_events.reason` says why a REJECT was refused. Existing `memories.source` strings
# become links: "chat:<c>/<m>" a chat source (message_id NULL when the message is gone),
# "import:<file>" an import source (role imported), any other text a turn source without text;
# a memory the user added by hand gets a "remembered" link, each EDIT not undone an "edited" one.
_NOW = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
_CHAT_REF = "'chat:' || m.conversation_id || '/' || m.id"
_PROVENANCE = (
    """CREATE TABLE sources (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('chat', 'turn', 'user', 'import')),
        message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
        ref TEXT,
        speaker TEXT,
        said_at TEXT,
        text TEXT,
        created_at TEXT NOT NULL,
        CHECK (kind = 'chat' OR message_id IS NULL),
        CHECK (kind != 'chat' OR text IS NULL)
    )""",
    "CREATE UNIQUE INDEX sources_message_idx ON sources(message_id) WHERE message_id IS NOT NULL",
    "CREATE UNIQUE INDEX sources_ref_idx ON sources(ref) WHERE kind != 'chat'",
    "CREATE INDEX sources_chat_ref_idx ON sources(ref) WHERE kind = 'chat'",
    """CREATE TABLE memory_sources (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        memory_id INTEGER NOT NULL,
        source_id INTEGER,
        role TEXT NOT NULL CHECK (role IN
            ('added', 'updated', 'repeated', 'edited', 'remembered', 'imported', 'superseded')),
        linked_at TEXT NOT NULL,
        event_id INTEGER
    )""",
    "CREATE INDEX memory_sources_memory_idx ON memory_sources(memory_id, id)",
    "CREATE INDEX memory_sources_source_idx ON memory_sources(source_id)",
    "ALTER TABLE memory_events ADD COLUMN reason TEXT",
    "ALTER TABLE memories ADD COLUMN superseded_by INTEGER",
    "CREATE INDEX memory_events_turn_idx ON memory_events(turn) WHERE event = 'REJECT'",
    # chat sources whose message still exists (speaker and time from the manager's queue)
    f"""INSERT INTO sources(kind, message_id, ref, speaker, said_at, created_at)
        SELECT 'chat', m.id, {_CHAT_REF}, q.speaker, q.said_at, {_NOW}
        FROM messages m LEFT JOIN manager_queue q ON q.message_id = m.id
        WHERE {_CHAT_REF} IN (SELECT source FROM memories WHERE source LIKE 'chat:%') ORDER BY m.id""",
    # chat sources whose message is gone: the link reads "source deleted"
    f"""INSERT INTO sources(kind, ref, created_at)
        SELECT 'chat', source, {_NOW} FROM memories
        WHERE source GLOB 'chat:[0-9]*/[0-9]*' AND source NOT GLOB 'chat:*[^0-9/]*'
          AND source NOT IN (SELECT ref FROM sources)
        GROUP BY source ORDER BY min(id)""",
    f"""INSERT INTO sources(kind, ref, created_at)
        SELECT CASE WHEN source LIKE 'import:%' THEN 'import' ELSE 'turn' END, source, {_NOW}
        FROM memories WHERE trim(coalesce(source, '')) != '' AND source NOT IN (SELECT ref FROM sources)
        GROUP BY source ORDER BY min(id)""",
    """INSERT INTO memory_sources(memory_id, source_id, role, linked_at, event_id)
        SELECT mem.id, s.id, CASE s.kind WHEN 'import' THEN 'imported' ELSE 'added' END, mem.created_at,
               (SELECT min(e.id) FROM memory_events e WHERE e.memory_id = mem.id AND e.event IN ('ADD', 'IMPORT'))
        FROM memories mem JOIN sources s ON s.ref = mem.source ORDER BY mem.id""",
    """INSERT INTO memory_sources(memory_id, source_id, role, linked_at, event_id)
        SELECT e.memory_id, NULL, 'remembered', e.at, e.id FROM memory_events e
        JOIN memories mem ON mem.id = e.memory_id
        WHERE e.event = 'ADD' AND e.actor = 'user' AND trim(coalesce(mem.source, '')) = '' ORDER BY e.id""",
    """INSERT INTO memory_sources(memory_id, source_id, role, linked_at, event_id)
        SELECT e.memory_id, NULL, 'edited', e.at, e.id FROM memory_events e
        JOIN memories mem ON mem.id = e.memory_id
        WHERE e.event = 'EDIT' AND e.undone = 0 ORDER BY e.id""",
)

# (number, name, statements): numbers are 1, 2, 3... in order
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "memories, events, keyword index", _MEMORIES),
    (2, "conversations and messages", _CHATS),
    (3, "the memory manager's durable queue", _MANAGER_QUEUE),
    (4, "provenance: sources, links, supersession, reject reasons", _PROVENANCE),
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
