"""Migration 4 (provenance) converts a bank written at schema 3: each memory's `source` string
becomes a link where it resolves, the user's own additions and edits are marked, and nothing
else changes."""

from __future__ import annotations

from core.memory import MemoryBank
from core.memory.db import connect
from core.memory.migrations import LATEST, MIGRATIONS

T0 = "2024-01-01T00:00:00.000+00:00"


def _schema3_bank(path):
    """A bank file at schema 3 with chats, memories of every source shape and their events."""
    conn = connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at TEXT NOT NULL)")
    for number, name, statements in MIGRATIONS[:3]:
        for sql in statements:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, T0))
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO conversations(id, title, created_at, updated_at) VALUES (1, 'c', ?, ?)", (T0, T0))
    conn.executemany("INSERT INTO messages(id, conversation_id, role, content, created_at) VALUES (?, 1, ?, ?, ?)",
                     [(1, "user", "I live in Lisbon", T0), (2, "assistant", "Nice!", T0),
                      (3, "user", "I have a dog called Rex", T0)])
    conn.execute("INSERT INTO manager_queue(message_id, speaker, said_at, queued_at, done_at, outcome) "
                 "VALUES (1, 'Sam', '8 May 2023', ?, ?, 'applied')", (T0, T0))
    memories = [  # id, text, source, actor of its ADD
        (1, "Sam lives in Lisbon", "chat:1/1", "manager"),
        (2, "Sam is from Portugal", "chat:1/1", "manager"),
        (3, "Sam has a dog named Rex", "chat:1/3", "manager"),
        (4, "Sam plays chess", "chat:9/99", "manager"),  # its chat was purged
        (5, "Caroline went to a support group", "locomo:conv-26/D1:3", "manager"),
        (6, "Caroline likes tea", "import:old.jsonl", "import"),
        (7, "Sam likes jazz", None, "user"),
        (8, "Sam likes cool jazz", "  ", "manager"),
        (9, "Sam is odd", "chat:1x/2", "manager"),
    ]
    for mid, text, source, actor in memories:
        conn.execute("INSERT INTO memories(id, text, text_key, created_at, updated_at, source) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (mid, text, f"k{mid}", T0, T0, source))
        conn.execute("INSERT INTO memory_events(batch, memory_id, event, new_text, new_status, actor, at) "
                     "VALUES (?, ?, ?, ?, 'active', ?, ?)", (mid, mid, "IMPORT" if actor == "import" else "ADD",
                                                          text, actor, T0))
    conn.execute("INSERT INTO memory_events(batch, memory_id, event, old_text, new_text, actor, at) "
                 "VALUES (20, 8, 'EDIT', 'Sam likes jazz', 'Sam likes cool jazz', 'user', ?)", (T0,))
    conn.execute("INSERT INTO memory_events(batch, memory_id, event, old_text, new_text, actor, at, undone) "
                 "VALUES (21, 8, 'EDIT', 'Sam likes cool jazz', 'x', 'user', ?, 1)", (T0,))
    conn.close()


def test_a_schema_3_bank_gets_its_source_strings_as_links(tmp_path, hash_embedder):
    path = tmp_path / "old.sqlite3"
    _schema3_bank(path)
    with MemoryBank(path, hash_embedder) as bank:
        assert bank.schema_version == LATEST == 4
        found = bank.sources(range(1, 10))
        view = {mid: [(s.kind, s.role, s.text, s.ref, s.deleted) for s in links] for mid, links in found.items()}
        assert view[1] == view[2] == [("chat", "added", "I live in Lisbon", "chat:1/1", False)]
        assert found[1][0].source_id == found[2][0].source_id
        assert (found[1][0].speaker, found[1][0].said_at) == ("Sam", "8 May 2023")  # from the queue
        assert view[3] == [("chat", "added", "I have a dog called Rex", "chat:1/3", False)]
        assert view[4] == [("chat", "added", None, "chat:9/99", True)]
        assert view[5] == [("turn", "added", None, "locomo:conv-26/D1:3", True)]
        assert view[6] == [("import", "imported", None, "import:old.jsonl", True)]
        assert view[7] == [("user", "remembered", None, None, False)]
        assert view[8] == [("user", "edited", None, None, False)]  # the undone edit is not a link
        assert view[9] == [("turn", "added", None, "chat:1x/2", True)]
        assert bank._conn.execute("SELECT count(*) FROM sources WHERE kind = 'chat' AND text IS NOT NULL"
                                  ).fetchone()[0] == 0
        # nothing else changed, and the new columns read empty
        assert [m.text for m in bank.list()][::-1] == [
            "Sam lives in Lisbon", "Sam is from Portugal", "Sam has a dog named Rex", "Sam plays chess",
            "Caroline went to a support group", "Caroline likes tea", "Sam likes jazz", "Sam likes cool jazz",
            "Sam is odd"]
        assert all(m.superseded_by is None for m in bank.list()) and all(e.reason is None for e in bank.history())
        assert bank.get(1).source == "chat:1/1"
        # the migrated chat source is the one a new turn on that message reuses
        from core.types import MemoryOp, SourceTurn
        new = bank.apply([MemoryOp("ADD", text="Sam lives by the sea")], source=SourceTurn("x", message_id=1)).memory
        assert bank.memory_sources(new.id)[0].source_id == found[1][0].source_id
    with MemoryBank(path, hash_embedder) as bank:  # reopening applies nothing twice
        assert bank._conn.execute("SELECT count(*) FROM memory_sources").fetchone()[0] == 10


def test_a_fresh_bank_has_the_provenance_tables(bank):
    tables = {r[0] for r in bank._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sources", "memory_sources"} <= tables
    cols = {r[1] for r in bank._conn.execute("PRAGMA table_info(memories)")}
    assert "superseded_by" in cols
    assert "reason" in {r[1] for r in bank._conn.execute("PRAGMA table_info(memory_events)")}
