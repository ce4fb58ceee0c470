"""Conversations and their messages, on the memory bank's database and connection.

Every message is committed the moment it is added or updated (never only at exit), so a
crash loses at most the tokens of a reply still streaming. Deleting a conversation is soft
(`restore_conversation` undoes it); `purge_conversation` removes it and its messages for good.
Temporary conversations are stored like any other (crash-safe) and flagged; the app decides
when to purge them (`purge_temporary`).

Thread-safety: every method takes the bank's lock, so any thread may call. Errors:
NotFoundError for an unknown id, InvalidInputError for a bad role or title, DatabaseError
subclasses as for the bank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, NamedTuple

from core.errors import InvalidInputError, NotFoundError
from core.textlog import erase_text_log

from core.memory.db import Connection, Transactor, checkpoint, inserted_id, now_iso
from core.memory.text import clean_optional

ROLES = ("system", "user", "assistant", "tool")
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: str
    updated_at: str
    temporary: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class ChatMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    meta: dict = field(default_factory=dict)


_CONV_COLS = "id, title, created_at, updated_at, temporary, deleted_at"
_MSG_COLS = "id, conversation_id, role, content, created_at, meta"


def _conv(row) -> Conversation:
    return Conversation(int(row[0]), row[1], row[2], row[3], bool(row[4]), row[5] is not None)


def _msg(row) -> ChatMessage:
    try:
        meta = json.loads(row[5]) if row[5] else {}
    except ValueError:
        meta = {}
    return ChatMessage(int(row[0]), int(row[1]), row[2], row[3], row[4], meta)


class _Table(NamedTuple):
    """One of the two chat tables: how to read a row by id and insert one (inside the caller's
    transaction)."""

    name: str
    cols: str
    parse: Callable
    what: str  # for the NotFoundError sentence

    def get(self, conn: Connection, key: int):
        row = conn.execute(f"SELECT {self.cols} FROM {self.name} WHERE id = ?", (key,)).fetchone()
        if row is None:
            raise NotFoundError(f"There is no {self.what} #{key}.")
        return self.parse(row)

    def insert(self, conn: Connection, **values):
        """Insert a row and return it as read back."""
        cols = ", ".join(values)
        cur = conn.execute(f"INSERT INTO {self.name}({cols}) VALUES ({', '.join('?' * len(values))})",
                           tuple(values.values()))
        return self.get(conn, inserted_id(cur))


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


class ChatStore:
    """Conversations/messages; created by `MemoryBank` (`bank.chats`), sharing its connection."""

    def __init__(self, db: Callable[[], ContextManager[Connection]], tx: Transactor) -> None:
        self._db = db  # the bank's lock + open-check + error translation
        self._tx = tx

    def _clean_title(self, title) -> str:
        title = " ".join((clean_optional(str(title)) or "").split())
        if not title:
            raise InvalidInputError("A conversation title cannot be empty.")
        return title[:MAX_TITLE_CHARS]

    def create_conversation(self, title: str = "New chat", *, temporary: bool = False) -> Conversation:
        title = self._clean_title(title)
        with self._db(), self._tx() as conn:
            now = now_iso()
            return _CONVERSATIONS.insert(conn, title=title, created_at=now, updated_at=now,
                                         temporary=int(temporary))

    def get_conversation(self, cid: int) -> Conversation:
        with self._db() as conn:
            return _CONVERSATIONS.get(conn, cid)

    def list_conversations(self, *, query: str | None = None, include_deleted: bool = False) -> list[Conversation]:
        """Newest updated first; `query` matches the title or any message's text (case-insensitive for ASCII)."""
        where, params = [], []
        if not include_deleted:
            where.append("c.deleted_at IS NULL")
        if query and query.strip():
            like = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m "
                         "WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\'))")
            params += [like, like]
        sql = f"SELECT {', '.join('c.' + c for c in _CONV_COLS.split(', '))} FROM conversations c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        with self._db() as conn:
            return [_conv(r) for r in conn.execute(sql, params)]

    def rename_conversation(self, cid: int, title: str) -> Conversation:
        title = self._clean_title(title)
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute("UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?", (title, now_iso(), cid))
            return _CONVERSATIONS.get(conn, cid)

    def delete_conversation(self, cid: int) -> None:
        """Soft delete: hidden from the list until `restore_conversation`."""
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute("UPDATE conversations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                         (now_iso(), cid))

    def restore_conversation(self, cid: int) -> None:
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute("UPDATE conversations SET deleted_at = NULL WHERE id = ?", (cid,))

    def purge_conversation(self, cid: int) -> None:
        """Permanently remove the conversation and its messages."""
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            conn.execute("DELETE FROM messages WHERE conversation_id = ?", (cid,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (cid,))
        self._leave_no_trace("chat purge")

    def _leave_no_trace(self, why: str) -> None:
        """After a purge: the WAL's copies of the deleted (zeroed) pages and the text log go too."""
        with self._db() as conn:
            checkpoint(conn, why)
        erase_text_log(Path(self._tx.path).parent / "logs")

    def purge_temporary(self) -> int:
        """Permanently remove every temporary conversation; returns how many."""
        with self._db(), self._tx() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM conversations WHERE temporary = 1")]
            for cid in ids:
                conn.execute("DELETE FROM messages WHERE conversation_id = ?", (cid,))
                conn.execute("DELETE FROM conversations WHERE id = ?", (cid,))
        if ids:
            self._leave_no_trace("temporary chat purge")
        return len(ids)

    def add_message(self, cid: int, role: str, content: str, *, meta: dict | None = None) -> ChatMessage:
        """Append and commit a message (empty content is allowed: a reply about to stream)."""
        if role not in ROLES:
            raise InvalidInputError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}.")
        content = _clean_content(content)
        meta_json = _meta_json(meta)
        with self._db(), self._tx() as conn:
            _CONVERSATIONS.get(conn, cid)
            now = now_iso()
            msg = _MESSAGES.insert(conn, conversation_id=cid, role=role, content=content, created_at=now,
                                   meta=meta_json)
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, cid))
            return msg

    def get_message(self, mid: int) -> ChatMessage:
        with self._db() as conn:
            return _MESSAGES.get(conn, mid)

    def update_message(self, mid: int, content: str | None = None, *, meta: dict | None = None) -> ChatMessage:
        """Replace the content and/or meta (meta replaces the whole dict) and commit."""
        with self._db(), self._tx() as conn:
            old = _MESSAGES.get(conn, mid)
            new_content = old.content if content is None else _clean_content(content)
            new_meta = _meta_json(old.meta if meta is None else meta)
            conn.execute("UPDATE messages SET content = ?, meta = ? WHERE id = ?", (new_content, new_meta, mid))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now_iso(), old.conversation_id))
            return _MESSAGES.get(conn, mid)

    def messages(self, cid: int, *, limit: int | None = None) -> list[ChatMessage]:
        """Oldest first; with `limit`, the last `limit` messages."""
        with self._db() as conn:
            _CONVERSATIONS.get(conn, cid)
            if limit is None:
                rows = conn.execute(f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY id",
                                    (cid,)).fetchall()
            else:
                rows = conn.execute(f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? "
                                    "ORDER BY id DESC LIMIT ?", (cid, max(0, int(limit)))).fetchall()[::-1]
            return [_msg(r) for r in rows]
