"""Conversations and their messages, on the memory bank's database and connection.

Every message is committed the moment it is added or updated (never only at exit), so a
crash loses at most the tokens of a reply still streaming. Deleting a conversation is soft
(`restore_conversation` undoes it, `deleted_conversations` lists the trash);
`purge_conversation` removes it and its messages for good, and `purge_deleted` does so for
every chat in the trash longer than a grace period (the memories taken from it stay).

Temporary conversations never touch the database file: they live in an in-memory database
attached to the bank's connection (schema `scratch`, ids below zero, so the same methods
serve both kinds) and vanish with the process; `purge_temporary` removes them earlier.

The Memory Manager's durable queue: `add_message(..., queue_for_manager=True)` marks a user
message pending in the transaction that stores it (never for a temporary chat);
`pending_turns()` lists what the manager has not finished, oldest first; `finish_pending`
clears a mark (the bank's `apply(done_message_id=...)` does it in the turn's own transaction).

Editing: `remove_from` drops a message and every later one (edit and resend), `turn_batches`
names the memory batches those turns wrote (for undo); a regenerated reply keeps its earlier
versions (`add_version`, `select_version`); a chat's own system prompt is its "system"
message (`system_prompt`, `set_system_prompt`).

Thread-safety: every method takes the bank's lock, so any thread may call. Errors:
NotFoundError for an unknown id, InvalidInputError for a bad role or title, ConflictError for
clearing a mark that is not pending, DatabaseError subclasses as for the bank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, ContextManager, NamedTuple

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.paths import CHAT_HISTORY_NAME
from core.textlog import erase_lines, erase_text_log
from core.types import TurnRef

from core.memory.db import Connection, Transactor, checkpoint, inserted_id, now_iso
from core.memory.text import clean_optional

ROLES = ("system", "user", "assistant", "tool")
MAX_TITLE_CHARS = 200
OUTCOMES = ("applied", "nothing", "failed")
SCRATCH = "scratch"  # the attached in-memory database of temporary chats
SCRATCH_FIRST_ID = -2_000_000_000

_SCRATCH_TABLES = (
    f"""CREATE TABLE IF NOT EXISTS {SCRATCH}.conversations (
        id INTEGER PRIMARY KEY, title TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        temporary INTEGER NOT NULL DEFAULT 1, deleted_at TEXT)""",
    f"""CREATE TABLE IF NOT EXISTS {SCRATCH}.messages (
        id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
        created_at TEXT NOT NULL, meta TEXT NOT NULL DEFAULT '{{}}')""",
)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: str
    updated_at: str
    temporary: bool = False
    deleted: bool = False
    deleted_at: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PendingTurn:
    """A user message the Memory Manager has not finished: what `Assistant` replays at start-up."""

    message_id: int
    conversation_id: int
    text: str
    speaker: str | None
    said_at: str | None

    @property
    def turn(self) -> str:
        return str(TurnRef.chat(self.conversation_id, self.message_id))


_CONV_COLS = "id, title, created_at, updated_at, temporary, deleted_at"
_MSG_COLS = "id, conversation_id, role, content, created_at, meta"


def _conv(row) -> Conversation:
    return Conversation(int(row[0]), row[1], row[2], row[3], bool(row[4]), row[5] is not None, row[5])


def _msg(row) -> ChatMessage:
    try:
        meta = json.loads(row[5]) if row[5] else {}
    except ValueError:
        meta = {}
    return ChatMessage(int(row[0]), int(row[1]), row[2], row[3], row[4], meta)


def _schema(key: int) -> str:
    """Where a conversation or message lives: temporary ones (ids below zero) in memory."""
    return SCRATCH if int(key) < 0 else "main"


class _Table(NamedTuple):
    """One of the two chat tables: how to read a row by id and insert one (inside the caller's
    transaction), in the schema its id belongs to."""

    name: str
    cols: str
    parse: Callable
    what: str  # for the NotFoundError sentence

    def get(self, conn: Connection, key: int):
        row = conn.execute(f"SELECT {self.cols} FROM {_schema(key)}.{self.name} WHERE id = ?", (key,)).fetchone()
        if row is None:
            raise NotFoundError(f"There is no {self.what} #{key}.")
        return self.parse(row)

    def insert(self, conn: Connection, schema: str, **values):
        """Insert a row and return it as read back."""
        cols = ", ".join(values)
        cur = conn.execute(f"INSERT INTO {schema}.{self.name}({cols}) VALUES ({', '.join('?' * len(values))})",
                           tuple(values.values()))
        return self.get(conn, int(values["id"]) if "id" in values else inserted_id(cur))


_CONVERSATIONS = _Table("conversations", _CONV_COLS, _conv, "conversation")
_MESSAGES = _Table("messages", _MSG_COLS, _msg, "message")


def _clean_content(content) -> str:
    if not isinstance(content, str):
        raise InvalidInputError(f"A message must be text, not {type(content).__name__}.")
    return clean_optional(content) or ""


def _meta_json(meta: dict | None) -> str:
    try:
        return json.dumps(meta or {}, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"Message metadata must be JSON-serialisable ({exc}).") from exc


def _remove(conn: Connection, cid: int) -> list[str]:
    """Delete a conversation and its messages (their manager marks go with them: ON DELETE CASCADE)
    and the REJECT events of its turns (they quote facts refused from its text). Returns the
    user messages' texts (for the terminal chat's history file)."""
    schema = _schema(cid)
    said = [t for (t,) in conn.execute(f"SELECT content FROM {schema}.messages WHERE conversation_id = ? "
                                       "AND role = 'user'", (cid,)) if t]
    conn.execute(f"DELETE FROM {schema}.messages WHERE conversation_id = ?", (cid,))
    conn.execute(f"DELETE FROM {schema}.conversations WHERE id = ?", (cid,))
    prefix = f"{TurnRef.chat(cid)}/"
    conn.execute("DELETE FROM main.memory_events WHERE event = 'REJECT' AND (turn = ? OR substr(turn, 1, ?) = ?)",
                 (str(TurnRef.chat(cid)), len(prefix), prefix))
    return said


class ChatStore:
    """Conversations/messages; created by `MemoryBank` (`bank.chats`), sharing its connection,
    to which it attaches the in-memory database of temporary chats."""

    def __init__(self, db: Callable[[], ContextManager[Connection]], tx: Transactor) -> None:
        self._db = db  # the bank's lock + open-check + error translation
        self._tx = tx
        # temporary ids: below zero, increasing (so ordering by id is ordering in time), never
        # reused in a process, and small enough for a Qt int signal
        self._next_scratch_id = SCRATCH_FIRST_ID
        with self._db() as conn:
            # a read-only bank's connection is query_only: lift it only to create the scratch
            # tables in memory (the file itself is opened mode=ro and stays unwritable)
            query_only = int(conn.execute("PRAGMA query_only").fetchone()[0])
            conn.execute("PRAGMA query_only = OFF")
            try:
                if SCRATCH not in {r[1] for r in conn.execute("PRAGMA database_list")}:
                    conn.execute(f"ATTACH DATABASE ':memory:' AS {SCRATCH}")
                for sql in _SCRATCH_TABLES:
                    conn.execute(sql)
            finally:
                conn.execute(f"PRAGMA query_only = {query_only}")

    def _scratch_id(self) -> int:
        key, self._next_scratch_id = self._next_scratch_id, self._next_scratch_id + 1
        return key

    def _clean_title(self, title) -> str:
        title = " ".join((clean_optional(str(title)) or "").split())
        if not title:
            raise InvalidInputError("A conversation title cannot be empty.")
        return title[:MAX_TITLE_CHARS]

    def create_conversation(self, title: str = "New chat", *, temporary: bool = False) -> Conversation:
        """A new conversation; a temporary one lives in memory only."""
        title = self._clean_title(title)
        with self._db(), self._tx() as conn:
            now = now_iso()
            if temporary:
                return _CONVERSATIONS.insert(conn, SCRATCH, id=self._scratch_id(), title=title, created_at=now,
                                             updated_at=now, temporary=1)
            return _CONVERSATIONS.insert(conn, "main", title=title, created_at=now, updated_at=now, temporary=0)

    def get_conversation(self, cid: int) -> Conversation:
        with self._db() as conn:
            return _CONVERSATIONS.get(conn, cid)

    def list_conversations(self, *, query: str | None = None, include_deleted: bool = False,
                           deleted_only: bool = False) -> list[Conversation]:
        """Newest updated first; `query` matches the title or any message's text (case-insensitive
        for ASCII); `deleted_only` lists the trash."""
        where, params = [], []
        if deleted_only:
            where.append("c.deleted_at IS NOT NULL")
        elif not include_deleted:
            where.append("c.deleted_at IS NULL")
        if query and query.strip():
            like = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM {s}.messages m "
                         "WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\'))")
            params += [like, like]
        sql = f"SELECT {', '.join('c.' + c for c in _CONV_COLS.split(', '))} FROM {{s}}.conversations c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._db() as conn:
            rows = [_conv(r) for s in ("main", SCRATCH) for r in conn.execute(sql.format(s=s), params)]
        return sorted(rows, key=lambda c: (c.updated_at, c.id), reverse=True)

    def deleted_conversations(self) -> list[Conversation]:
        """The trash: soft-deleted conversations, most recently deleted first."""
        return sorted(self.list_conversations(deleted_only=True), key=lambda c: (c.deleted_at or "", c.id),
                      reverse=True)

    def rename_conversation(self, cid: int, title: str) -> Conversation:
        title = self._clean_title(title)
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute(f"UPDATE {_schema(cid)}.conversations SET title = ?, updated_at = ? WHERE id = ?",
                         (title, now_iso(), cid))
            return _CONVERSATIONS.get(conn, cid)

    def delete_conversation(self, cid: int) -> None:
        """Soft delete: hidden from the list until `restore_conversation`."""
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute(f"UPDATE {_schema(cid)}.conversations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                         (now_iso(), cid))

    def restore_conversation(self, cid: int) -> None:
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute(f"UPDATE {_schema(cid)}.conversations SET deleted_at = NULL WHERE id = ?", (cid,))

    def purge_conversation(self, cid: int) -> None:
        """Permanently remove the conversation and its messages (the memories taken from it stay)."""
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            said = _remove(conn, cid)
        self._leave_no_trace("chat purge", said)

    def _leave_no_trace(self, why: str, said: tuple[str, ...] | list[str] = ()) -> None:
        """After a purge: the WAL's copies of the deleted (zeroed) pages, the text log and the
        terminal chat history's lines of what was `said` go too."""
        with self._db() as conn:
            checkpoint(conn, why)
        folder = Path(self._tx.path).parent
        erase_text_log(folder / "logs")
        erase_lines(folder / CHAT_HISTORY_NAME, said)

    def purge_deleted(self, older_than_days: float = 0.0) -> int:
        """Permanently remove every conversation in the trash for more than `older_than_days`
        days (0: the whole trash); returns how many."""
        cutoff = (datetime.now(timezone.utc) - timedelta(days=max(0.0, float(older_than_days))))
        cutoff_iso = cutoff.isoformat(timespec="milliseconds")
        with self._db(), self._tx() as conn:
            ids = [int(r[0]) for s in ("main", SCRATCH) for r in conn.execute(
                f"SELECT id FROM {s}.conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?", (cutoff_iso,))]
            said = [t for cid in ids for t in _remove(conn, cid)]
        if ids:
            self._leave_no_trace("trash purge", said)
        return len(ids)

    def purge_temporary(self) -> int:
        """Permanently remove every temporary conversation (and any a Memory-R1 before the
        in-memory home left in the file); returns how many."""
        with self._db(), self._tx() as conn:
            ids = [int(r[0]) for s in ("main", SCRATCH)
                   for r in conn.execute(f"SELECT id FROM {s}.conversations WHERE temporary = 1")]
            for cid in ids:  # a row with a positive id is a legacy one in the file: _remove finds it
                _remove(conn, cid)
        if ids:
            self._leave_no_trace("temporary chat purge")
        return len(ids)

    def add_message(self, cid: int, role: str, content: str, *, meta: dict | None = None,
                    queue_for_manager: bool = False, speaker: str | None = None,
                    said_at: str | None = None) -> ChatMessage:
        """Append and commit a message (empty content is allowed: a reply about to stream).

        `queue_for_manager` (user messages of stored chats only; ignored for a temporary one)
        marks it pending for the Memory Manager in the same transaction, with the `speaker`
        and the time it was `said_at` that the manager will be given."""
        if role not in ROLES:
            raise InvalidInputError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}.")
        if queue_for_manager and role != "user":
            raise InvalidInputError("Only a user's message is given to the memory manager.")
        content = _clean_content(content)
        meta_json = _meta_json(meta)
        schema = _schema(cid)
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            now = now_iso()
            extra = {"id": self._scratch_id()} if schema == SCRATCH else {}
            msg = _MESSAGES.insert(conn, schema, **extra, conversation_id=cid, role=role, content=content,
                                   created_at=now, meta=meta_json)
            conn.execute(f"UPDATE {schema}.conversations SET updated_at = ? WHERE id = ?", (now, cid))
            if queue_for_manager and schema == "main":
                conn.execute("INSERT INTO manager_queue(message_id, speaker, said_at, queued_at) VALUES (?, ?, ?, ?)",
                             (msg.id, speaker, said_at, now))
            return msg

    def get_message(self, mid: int) -> ChatMessage:
        with self._db() as conn:
            return _MESSAGES.get(conn, mid)

    def update_message(self, mid: int, content: str | None = None, *, meta: dict | None = None) -> ChatMessage:
        """Replace the content and/or meta (meta replaces the whole dict) and commit."""
        schema = _schema(mid)
        with self._db(), self._tx() as conn:
            old = _MESSAGES.get(conn, mid)
            new_content = old.content if content is None else _clean_content(content)
            new_meta = _meta_json(old.meta if meta is None else meta)
            conn.execute(f"UPDATE {schema}.messages SET content = ?, meta = ? WHERE id = ?",
                         (new_content, new_meta, mid))
            conn.execute(f"UPDATE {schema}.conversations SET updated_at = ? WHERE id = ?",
                         (now_iso(), old.conversation_id))
            return _MESSAGES.get(conn, mid)

    def messages(self, cid: int, *, limit: int | None = None) -> list[ChatMessage]:
        """Oldest first; with `limit`, the last `limit` messages."""
        table = f"{_schema(cid)}.messages"
        with self._db() as conn:
            _CONVERSATIONS.get(conn, cid)
            if limit is None:
                rows = conn.execute(f"SELECT {_MSG_COLS} FROM {table} WHERE conversation_id = ? ORDER BY id",
                                    (cid,)).fetchall()
            else:
                rows = conn.execute(f"SELECT {_MSG_COLS} FROM {table} WHERE conversation_id = ? "
                                    "ORDER BY id DESC LIMIT ?", (cid, max(0, int(limit)))).fetchall()[::-1]
            return [_msg(r) for r in rows]

    # --- the Memory Manager's durable queue -----------------------------------------------
    def pending_turns(self) -> list[PendingTurn]:
        """User messages marked for the manager and not finished, oldest first."""
        with self._db() as conn:
            rows = conn.execute(
                "SELECT q.message_id, m.conversation_id, m.content, q.speaker, q.said_at FROM manager_queue q "
                "JOIN messages m ON m.id = q.message_id WHERE q.done_at IS NULL ORDER BY q.message_id").fetchall()
        return [PendingTurn(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]

    def is_pending(self, mid: int) -> bool:
        with self._db() as conn:
            return conn.execute("SELECT 1 FROM manager_queue WHERE message_id = ? AND done_at IS NULL",
                                (mid,)).fetchone() is not None

    def finish_pending(self, mid: int, outcome: str) -> None:
        """Clear message `mid`'s pending mark, recording `outcome` ("applied": its ops were
        written, "nothing": the manager found nothing, "failed": its output was unusable).
        Inside a bank batch this joins its transaction. ConflictError when the message is
        not pending (already finished, or never queued): the caller must not write the turn."""
        if outcome not in OUTCOMES:
            raise InvalidInputError(f"Unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}.")
        with self._db(), self._tx() as conn:
            cur = conn.execute("UPDATE manager_queue SET done_at = ?, outcome = ? "
                               "WHERE message_id = ? AND done_at IS NULL", (now_iso(), outcome, mid))
            if cur.rowcount != 1:
                raise ConflictError(f"Message #{mid} is not waiting for the memory manager.")

    # --- editing, reply versions, the chat's own system prompt ---------------------------------
    def remove_from(self, cid: int, mid: int) -> list[ChatMessage]:
        """Delete message `mid` of conversation `cid` and every later message of it, in one
        transaction (their manager marks go with them, so a turn not processed yet is never
        written); returns the removed messages, oldest first. The chat's system prompt (a
        "system" message) stays. NotFoundError when `mid` is not a message of `cid`."""
        schema = _schema(cid)
        with self._db(), self._tx() as conn:
            msg = _MESSAGES.get(conn, mid)
            if msg.conversation_id != cid:
                raise NotFoundError(f"There is no message #{mid} in conversation #{cid}.")
            rows = [_msg(r) for r in conn.execute(
                f"SELECT {_MSG_COLS} FROM {schema}.messages WHERE conversation_id = ? AND id >= ? "
                "AND role != 'system' ORDER BY id", (cid, mid))]
            conn.execute(f"DELETE FROM {schema}.messages WHERE conversation_id = ? AND id >= ? AND role != 'system'",
                         (cid, mid))
            conn.execute(f"UPDATE {schema}.conversations SET updated_at = ? WHERE id = ?", (now_iso(), cid))
            return rows

    def turn_batches(self, turns: list[str]) -> list[int]:
        """The memory batches (newest first) with changes not yet undone that the chat turns
        `turns` ("chat:<conversation>/<message>") wrote: what undoing those turns reverts."""
        refs = [str(t) for t in turns]
        if not refs:
            return []
        marks = ",".join("?" * len(refs))
        with self._db() as conn:
            rows = conn.execute(f"SELECT DISTINCT batch FROM main.memory_events WHERE turn IN ({marks}) "
                                "AND undone = 0 AND origin IS NULL AND event NOT IN ('UNDO', 'NOOP', 'REJECT', "
                                "'FORGET') ORDER BY batch DESC", refs).fetchall()
        return [int(r[0]) for r in rows]

    def add_version(self, mid: int, content: str, meta: dict | None = None) -> ChatMessage:
        """A new version of a reply (regenerate): the message shows `content`/`meta` from now
        on and keeps every earlier version in `meta["versions"]` (`[{"content", "meta"}]`,
        oldest first; `meta["version"]` is the index shown)."""
        old = self.get_message(mid)
        versions = _versions_of(old)
        versions.append({"content": _clean_content(content), "meta": _plain_meta(meta)})
        return self._show_version(mid, versions, len(versions) - 1)

    def select_version(self, mid: int, index: int) -> ChatMessage:
        """Show version `index` (0-based) of a reply: the history the model reads next is the
        version the user sees. InvalidInputError for an index out of range."""
        versions = _versions_of(self.get_message(mid))
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(versions):
            raise InvalidInputError(f"Message #{mid} has no version {index!r} (it has {len(versions)}).")
        return self._show_version(mid, versions, index)

    def _show_version(self, mid: int, versions: list[dict], index: int) -> ChatMessage:
        shown = versions[index]
        return self.update_message(mid, shown["content"], meta={**shown["meta"], "versions": versions,
                                                                "version": index})

    def system_prompt(self, cid: int) -> str | None:
        """The chat's own system prompt (its "system" message), or None (the default applies)."""
        rows = [m for m in self.messages(cid) if m.role == "system"]
        return rows[-1].content if rows and rows[-1].content.strip() else None

    def set_system_prompt(self, cid: int, text: str | None) -> None:
        """Set (or, with None or blank text, clear) the chat's own system prompt."""
        text = _clean_content(text or "").strip()
        rows = [m for m in self.messages(cid) if m.role == "system"]
        if rows:
            self.update_message(rows[-1].id, text)
        elif text:
            self.add_message(cid, "system", text)


def _plain_meta(meta: dict | None) -> dict:
    out = dict(meta or {})
    out.pop("versions", None)
    out.pop("version", None)
    _meta_json(out)
    return out


def _versions_of(msg: ChatMessage) -> list[dict]:
    """A reply's versions, oldest first (one: the message itself, for one never regenerated)."""
    versions = (msg.meta or {}).get("versions")
    if isinstance(versions, list) and versions and all(isinstance(v, dict) and "content" in v for v in versions):
        return [{"content": str(v["content"]), "meta": dict(v.get("meta") or {})} for v in versions]
    return [{"content": msg.content, "meta": _plain_meta(msg.meta)}]
