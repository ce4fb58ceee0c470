"""`MemoryBank`: the long-term memory the Memory Manager writes and the Answer Agent reads.

Storage (SQLite via sqlean + sqlite-vec, see `migrations`): `memories` is the source of
truth; `memories_fts` (FTS5) and `memory_vectors` (vec0, cosine) are indexes rebuilt by
`reindex()`; `memory_events` logs every change for history, `undo` and `restore`.
Every mutator (add, apply, edit, delete, restore, forget, undo; import via its report)
returns the `MemoryChanges` it committed, with the `batch_id` that `undo(batch=...)` reverts
and the `TurnRef` that caused it; listeners get the same object.

Threads: one connection (`check_same_thread=False`) guarded by one `RLock`; every public
method may be called from any thread. Embedding runs outside the lock where it can (add,
edit, apply, search), so a slow embedder does not block readers. Listeners are called after
every committed change, on the calling thread, outside the lock.

Retrieval: vector search runs on an in-memory float32 mirror of the vec0 table (NumPy
matrix-vector product + argpartition), updated after each commit and reloaded when another
process commits (`PRAGMA data_version`). Departure from the paper: the paper's RAG step is a
plain top-60 vector search; we add keyword (FTS5) and hybrid (reciprocal-rank fusion) modes
so exact names and numbers are found too; the Answer Agent chooses the mode.

Errors: NotFoundError (unknown id), ConflictError (version mismatch / wrong state),
InvalidInputError (empty text, bad option), DatabaseLockedError, DatabaseCorruptError,
SchemaTooNewError. `UPDATE` is in place (the id stays stable for the manager); an ADD with
`supersedes` makes the older memory `superseded` (kept, `superseded_by` the newer one).

Provenance (core.memory.sources): `apply`/`add`/`edit` keep the turn they were given and link
each memory to it; `sources()`/`memory_sources()` read the links, `remove_source_text()` and
`forget(sources=True)` erase the turn's text; REJECT events (`rejected()`) record what the
grounding gate refused.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import numbers
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.types import Embedder, Hit, Memory, MemoryChanges, MemoryEvent, MemoryOp, MemorySource, SourceTurn, TurnRef

from core.memory import history as _history
from core.memory import io as _io
from core.memory import index as _index
from core.memory import sources as _sources
from core.memory.db import Connection, Transactor, connect, translate_errors
from core.memory.migrations import migrate
from core.memory.rows import (EVENT_COLS, MEM_COLS, STATUSES, Batch, LazySource, apply_op, check_id, check_op,
                  fetch_memories, fetch_memory, row_to_event, row_to_memory)
from core.memory.text import clean_text, fts_query, text_key

if TYPE_CHECKING:  # numpy (and the mirror on it) load with the first vector: opening a bank needs neither
    import numpy as np

    from core.memory.mirror import VectorMirror

log = logging.getLogger(__name__)

MODES = ("vector", "keyword", "hybrid")
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
Listener = Callable[[MemoryChanges], None]


class LazyDefaultEmbedder:
    """all-MiniLM-L6-v2 by name and dimension, loaded on the first `embed` call.

    Commands that never embed (list, delete, history, export...) then start without torch.
    """

    def __init__(self) -> None:
        from core.embeddings import DEFAULT_DIM, DEFAULT_EMBEDDER_NAME, SentenceTransformerEmbedder

        self.name = DEFAULT_EMBEDDER_NAME
        self.dim = DEFAULT_DIM
        # the model's calibration, without loading it (a lazy bank used to get the fallbacks:
        # no chat floor at all in the app)
        self.related_score = SentenceTransformerEmbedder.related_score
        self.chat_min_score = SentenceTransformerEmbedder.chat_min_score

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from core.embeddings import default_embedder

        return default_embedder().embed(texts)


def lazy_default_embedder() -> Embedder:
    return LazyDefaultEmbedder()


class MemoryBank:
    """See the module docstring. Open with `MemoryBank.open()` or `MemoryBank(path, embedder)`."""

    def __init__(self, path: str | Path, embedder: Embedder, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.embedder = embedder
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._mirror: VectorMirror | None = None
        self._data_version: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: Connection | None = connect(self.path, timeout=timeout)
        try:
            self.schema_version = migrate(self._conn, self.path)
            self._tx = Transactor(self._conn, self.path)
            self._check_index()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        from core.chats import ChatStore  # core.chats imports core.memory.db: not at module level

        self.chats = ChatStore(self.reader, self._tx)

    @classmethod
    def open(cls, path: str | Path | None = None, embedder: Embedder | None = None, **kw) -> "MemoryBank":
        """The bank at `path` (default: `core.paths.db_path()`) with `embedder` (default: lazy MiniLM)."""
        from core.paths import db_path

        return cls(path or db_path(), embedder or lazy_default_embedder(), **kw)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._mirror = None

    def __enter__(self) -> "MemoryBank":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    @contextlib.contextmanager
    def reader(self) -> Iterator[Connection]:
        """The connection under the bank's lock, with the open-check and sqlite-error
        translation: the seam for the bank's own modules (history, io, chats). Writes go
        through `batch` (or the chat store's transactor); do not hold it across slow work."""
        with self._lock, translate_errors(self.path):
            if self._conn is None:
                raise InvalidInputError("The memory bank is closed.")
            yield self._conn

    def _check_index(self) -> None:
        """Rebuild the vector index when the embedder changed or vectors are missing."""
        with self.reader() as conn:
            name, dim = self.embedder.name, int(self.embedder.dim)
            if not _index.index_matches(conn, name, dim):
                old = (_index.get_meta(conn, "embedder_name"), _index.get_meta(conn, "embedder_dim"))
                if old != (None, None):
                    log.warning("embedder changed from %s/%s to %s/%s: rebuilding the vector index of %s",
                                old[0], old[1], name, dim, self.path)
                self._rebuild_vectors()

    def _rebuild_vectors(self) -> None:
        with self._tx() as conn:
            rows = conn.execute("SELECT id, text FROM memories ORDER BY id").fetchall()
            n = _index.rebuild_vectors(conn, self.embedder, rows)
        if n:
            log.info("re-embedded %d memories with %s", n, self.embedder.name)
        self._mirror = None

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            import numpy as np

            return np.zeros((0, int(self.embedder.dim)), np.float32)
        vecs = _index.as_unit_rows(self.embedder.embed(list(texts)), int(self.embedder.dim))
        if len(vecs) != len(texts):
            raise RuntimeError(f"embedder {self.embedder.name} returned {len(vecs)} rows for {len(texts)} texts")
        return vecs

    def _mirror_ready(self) -> VectorMirror:
        """The mirror, (re)loaded if never loaded or another connection committed since.
        Call under `reader()` (the lock held, the bank open)."""
        conn = self._conn
        assert conn is not None
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if self._mirror is None or version != self._data_version:
            from core.memory.mirror import VectorMirror

            mirror = VectorMirror(int(self.embedder.dim))
            own_snapshot = not conn.in_transaction
            if own_snapshot:
                conn.execute("BEGIN")  # one snapshot for the rows and their vectors
            try:
                version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                ids, mat, statuses, speakers, missing = _index.load_all(conn, mirror.dim)
            finally:
                if own_snapshot:
                    conn.execute("COMMIT")
            mirror.bulk_load(ids, mat, statuses, speakers)
            self._mirror, self._data_version = mirror, version
            if missing:
                self._repair_vectors(mirror, missing)
        return self._mirror

    def _repair_vectors(self, mirror: VectorMirror, ids: list[int]) -> None:
        """Embed memories that have no vector (only after a bug or a hand edit of the file)."""
        log.warning("%s: %d memories had no vector; embedding them now", self.path, len(ids))
        with self._tx() as conn:
            rows = fetch_memories(conn, ids)
            ids = [i for i in ids if i in rows]
            vecs = self._embed([rows[i].text for i in ids])
            for mid, vec in zip(ids, vecs):
                _index.write_vector(conn, mid, vec, replace=True)
        for mid, vec in zip(ids, vecs):
            mirror.upsert(mid, vec, rows[mid].status, rows[mid].speaker)

    def _apply_mirror(self, ops: list[tuple]) -> None:
        if self._mirror is None:
            return
        try:
            for op in ops:
                if op[0] == "upsert":
                    self._mirror.upsert(op[1], op[2], op[3], op[4])
                elif op[0] == "status":
                    self._mirror.set_status(op[1], op[2])
                else:
                    self._mirror.remove(op[1])
        except Exception:  # a bug: fall back to a reload rather than serve a wrong index
            log.exception("vector mirror update failed; it will be reloaded")
            self._mirror = None

    @contextlib.contextmanager
    def batch(self, actor: str, turn: TurnRef | str | None) -> Iterator[Batch]:
        """Lock + one write transaction + a `Batch` (rows.py) for the bank's own modules
        (history, io): on commit, the mirror update, then the listeners (outside the lock).
        An exception inside the block rolls everything back and notifies no one."""
        with self.reader():
            with self._tx() as conn:
                batch = Batch(conn, actor, turn)
                yield batch
            self._apply_mirror(batch.mirror_ops)
        if batch.changes or batch.changes.noops or batch.changes.event_ids:  # a REJECT-only turn too
            self._notify(batch.changes)

    def _notify(self, changes: MemoryChanges) -> None:
        for fn in list(self._listeners):
            try:
                fn(changes)
            except Exception:
                log.exception("memory listener %r failed", fn)

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(changes)` after every committed change (on the writer's thread)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    # ---------------------------------------------------------------- reading
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The embedder's unit float32 rows for `texts`."""
        return self._embed(list(texts))

    def get(self, memory_id: int) -> Memory:
        with self.reader() as conn:
            mem = fetch_memory(conn, check_id(memory_id))
        if mem is None:
            raise NotFoundError(f"There is no memory #{memory_id}.")
        return mem

    @staticmethod
    def _check_status(status: str | None) -> None:
        if status is not None and status not in STATUSES:
            raise InvalidInputError(f"Unknown status {status!r}; expected one of {', '.join(STATUSES)}.")

    def list(self, *, status: str | None = "active", speaker: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[Memory]:
        """Memories newest first; `status=None` means every status."""
        self._check_status(status)
        where: list[str] = []
        params: list[str | int] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if speaker is not None:
            where.append("speaker = ?")
            params.append(speaker)
        sql = f"SELECT {MEM_COLS} FROM memories"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else max(0, int(limit)), max(0, int(offset))]
        with self.reader() as conn:
            return [row_to_memory(r) for r in conn.execute(sql, params)]

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version` on this bank's connection: it changes when another
        connection (another process: `memory-r1 mcp`/`serve`, the CLI) commits, never on this
        bank's own commits (those reach the listeners). Poll it to notice changes made elsewhere."""
        with self.reader() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def count(self, status: str | None = "active") -> int:
        self._check_status(status)
        with self.reader() as conn:
            if status is None:
                return int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
            return int(conn.execute("SELECT count(*) FROM memories WHERE status = ?", (status,)).fetchone()[0])

    def speakers(self) -> builtins.list[str]:
        """Distinct speakers of active memories, sorted."""
        with self.reader() as conn:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT speaker FROM memories WHERE status = 'active' AND speaker IS NOT NULL "
                "ORDER BY speaker")]

    def search(self, query: str, *, k: int = 10, mode: str = "hybrid", speaker: str | None = None,
               status: str | None = "active") -> builtins.list[Hit]:
        """The best `k` memories for `query`, best first.

        Scores: cosine (vector), -bm25 (keyword: the query's words ORed, stemmed), reciprocal-rank
        fusion (hybrid). `speaker` matches exactly; `status=None` searches every status. Any
        text is a valid query (it is never parsed as FTS5 or SQL); empty -> InvalidInputError.
        """
        query = clean_text(query, "search query")
        if mode not in MODES:
            raise InvalidInputError(f"Unknown search mode {mode!r}; expected one of {', '.join(MODES)}.")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise InvalidInputError(f"k must be a positive whole number, not {k!r}.")
        k = int(k)
        self._check_status(status)
        pool = k if mode != "hybrid" else max(2 * k, 20)
        qvec = self._embed([query])[0] if mode != "keyword" else None
        with self.reader() as conn:
            vec_ranked = self._mirror_ready().search(qvec, pool, status=status, speaker=speaker) \
                if qvec is not None else []
            kw_ranked = self._keyword(conn, query, pool, status, speaker) if mode != "vector" else []
            if mode == "hybrid":
                ranked = _rrf(vec_ranked, kw_ranked)
            else:
                ranked = vec_ranked if mode == "vector" else kw_ranked
            return self._hits(conn, ranked[:k])

    def search_by_vector(self, vec: np.ndarray, *, k: int, speaker: str | None = None) -> builtins.list[Hit]:
        """The top `k` active memories by cosine to a precomputed query embedding."""
        qvec = _index.as_unit_rows(vec, int(self.embedder.dim))[0]
        with self.reader() as conn:
            return self._hits(conn, self._mirror_ready().search(qvec, int(k), speaker=speaker))

    def find_duplicate(self, text: str, *, speaker: str | None = None, threshold: float = 0.95,
                       vec: np.ndarray | None = None) -> Memory | None:
        """An active memory with the same text (ignoring case and spacing) or cosine >= threshold."""
        text = clean_text(text)
        with self.reader() as conn:
            sql = f"SELECT {MEM_COLS} FROM memories WHERE text_key = ? AND status = 'active'"
            params: list = [text_key(text)]
            if speaker is not None:
                sql += " AND speaker = ?"
                params.append(speaker)
            row = conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
            if row is not None:
                return row_to_memory(row)
        qvec = self._embed([text])[0] if vec is None else _index.as_unit_rows(vec, int(self.embedder.dim))[0]
        with self.reader() as conn:
            top = self._mirror_ready().search(qvec, 1, speaker=speaker)
            if top and top[0][1] >= threshold:
                return fetch_memory(conn, top[0][0])
        return None

    def _keyword(self, conn: Connection, query: str, k: int, status: str | None,
                 speaker: str | None) -> builtins.list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        sql = ("SELECT m.id, bm25(memories_fts) AS rank FROM memories_fts "
               "JOIN memories m ON m.id = memories_fts.rowid WHERE memories_fts MATCH ?")
        params: list = [match]
        if status is not None:
            sql += " AND m.status = ?"
            params.append(status)
        if speaker is not None:
            sql += " AND m.speaker = ?"
            params.append(speaker)
        sql += " ORDER BY rank LIMIT ?"
        params.append(int(k))
        return [(int(i), -float(r)) for i, r in conn.execute(sql, params)]

    @staticmethod
    def _hits(conn: Connection, ranked: builtins.list[tuple[int, float]]) -> builtins.list[Hit]:
        rows = fetch_memories(conn, [i for i, _ in ranked])
        return [Hit(rows[i], s) for i, s in ranked if i in rows]

    def vec0_search(self, vec: np.ndarray, *, k: int) -> builtins.list[tuple[int, float]]:
        """sqlite-vec's own KNN over all stored vectors (the reference the mirror is checked against)."""
        qvec = _index.as_unit_rows(vec, int(self.embedder.dim))[0]
        with self.reader() as conn:
            return _index.knn(conn, qvec, k)

    # ---------------------------------------------------------------- writing
    # Every mutator returns the MemoryChanges it committed (with its `batch_id` for undo and
    # its `turn`); the same object goes to the listeners. `turn` is a TurnRef or its text.
    def add(self, text: str, *, speaker: str | None = None, observed_at=None,
            source: SourceTurn | str | None = None, actor: str = "user",
            turn: TurnRef | str | None = None) -> MemoryChanges:
        """Add one active memory (event ADD); `.memory` of the result is the new row.

        `source`: the `SourceTurn` it came from, linked as in `apply` ("remembered" when the
        actor is the user, "added" otherwise; the user's add without a source gets a
        "remembered" link with no source), its `ref` kept as `Memory.source`; or a plain
        text, kept as `Memory.source` only (no source row)."""
        turn_source = source if isinstance(source, SourceTurn) else None
        legacy = source.ref if isinstance(source, SourceTurn) else source
        op = MemoryOp("ADD", text=text, speaker=speaker, observed_at=observed_at, source=legacy)
        return self.apply([op], actor=actor, turn=turn, source=turn_source)

    def apply(self, ops: Sequence[MemoryOp], *, actor: str = "manager", turn: TurnRef | str | None = None,
              vectors: np.ndarray | None = None, done_message_id: int | None = None,
              source: SourceTurn | None = None) -> MemoryChanges:
        """Apply manager operations in ONE transaction: all of them or none.

        ADD inserts (`supersedes=X`: the active X becomes superseded, `superseded_by` the new
        id, event SUPERSEDE undone with the ADD, X in `changes.deleted`); UPDATE replaces an
        active memory's text in place (same text -> NOOP); DELETE soft-deletes; NOOP records a
        NOOP event; REJECT records a REJECT event (the refused fact, `op.reason`, the memory a
        refused UPDATE named), no memory: not a change, not undoable, see `rejected()`. An
        unknown or non-active id: NotFoundError, nothing applied. `vectors` (one row per op)
        skips embedding. `done_message_id`: the user message whose pending mark (core.chats)
        is cleared in the same transaction; ConflictError, nothing applied, if not pending.

        `source`: the turn the ops came from, kept (get-or-create, core.memory.sources) and
        linked in the same transaction: ADD "added" ("remembered" when `actor` is "user"; a
        user's ADD without a source gets a "remembered" link with no source), UPDATE "updated"
        (earlier links stay), NOOP naming a memory or an unchanged UPDATE "repeated", the
        superseded memory "superseded". The source row is made on the first link (a turn whose
        facts were all refused keeps no text); a temporary chat's message links nothing.
        InvalidInputError for a malformed source.
        """
        ops = list(ops)
        texts = [check_op(op) for op in ops]
        source = _sources.check_source(source)
        need = [i for i, op in enumerate(ops) if op.event in ("ADD", "UPDATE")]
        if vectors is None:
            embedded = self._embed([texts[i] for i in need])
            vecs = {i: embedded[j] for j, i in enumerate(need)}
        else:
            rows = _index.as_unit_rows(vectors, int(self.embedder.dim))
            if len(rows) != len(ops):
                raise InvalidInputError(f"{len(rows)} vectors given for {len(ops)} operations.")
            vecs = {i: rows[i] for i in need}
        with self.batch(actor, turn) as batch:
            if done_message_id is not None:
                self.chats.finish_pending(done_message_id, "applied")
            lazy = None if source is None else LazySource(batch, source)
            for i, op in enumerate(ops):
                apply_op(batch, op, texts[i], vecs.get(i), lazy)
        return batch.changes

    def edit(self, memory_id: int, text: str, *, expected_version: int | None = None, actor: str = "user",
             turn: TurnRef | str | None = None, source: SourceTurn | None = None) -> MemoryChanges:
        """The user's edit of an active memory (event EDIT, and an "edited" link: to `source`
        when given, else with no source, i.e. the user's own); the same text changes nothing
        (empty result). ConflictError if the version moved on or the memory is not active."""
        text = clean_text(text)
        source = _sources.check_source(source)
        vec = self._embed([text])[0]
        with self.batch(actor, turn) as batch:
            mem = batch.require(memory_id)
            if expected_version is not None and mem.version != int(expected_version):
                raise ConflictError(f"Memory #{mem.id} changed since it was read (version {mem.version}, "
                                    f"expected {expected_version}); reload it and try again.")
            if mem.status != "active":
                raise ConflictError(f"Memory #{mem.id} is {mem.status}; restore it before editing.")
            if mem.text != text:
                batch.set_text(mem, text, vec, event="EDIT")
                sid = None if source is None else _sources.resolve(batch.conn, source, turn=batch.turn)
                _sources.link(batch.conn, mem.id, sid, "edited", batch.last_event)
        return batch.changes

    def delete(self, memory_ids: int | Iterable[int], *, actor: str = "user",
               turn: TurnRef | str | None = None) -> MemoryChanges:
        """Soft delete of one id or several in ONE transaction (event DELETE each, one batch:
        one `undo` brings them all back). NotFoundError / ConflictError (already deleted) for
        any of them and nothing is deleted."""
        return self._set_statuses(memory_ids, "deleted", "DELETE", actor, turn, "is already deleted")

    def restore(self, memory_ids: int | Iterable[int], *, actor: str = "user") -> MemoryChanges:
        """Make deleted (or superseded) memories active again, one id or several in ONE
        transaction (event RESTORE each). ConflictError if any is already active."""
        return self._set_statuses(memory_ids, "active", "RESTORE", actor, None, "is not deleted")

    def _set_statuses(self, memory_ids, status: str, event: str, actor: str, turn, refusal: str) -> MemoryChanges:
        with self.batch(actor, turn) as batch:
            for mem in [batch.require(i) for i in _id_list(memory_ids)]:
                if mem.status == status:
                    raise ConflictError(f"Memory #{mem.id} {refusal}.")
                batch.set_status(mem, status, event=event)
        return batch.changes

    def forget(self, memory_ids: int | Iterable[int], *, sources: bool = False) -> MemoryChanges:
        """Permanently remove memories (one id or several, one transaction): the rows, their
        vectors, keyword entries, their text in the history and their source links
        (`changes.forgotten`). `sources=True` also removes, in the same transaction, the text
        of the turns they came from (as `remove_source_text`). Not undoable."""
        return _history.forget(self, _id_list(memory_ids), sources=sources)

    def rejected(self, turn: TurnRef | str | None = None, *, limit: int = 100) -> builtins.list[MemoryEvent]:
        """REJECT events (facts the grounding gate refused, each with its `reason`), newest
        first: all of them, or those of one turn (`TurnRef` or its text, e.g. "chat:3/17")."""
        with self.reader() as conn:
            return _history.rejected(conn, TurnRef.of(turn), limit)

    def sources(self, memory_ids: Iterable[int]) -> dict[int, builtins.list[MemorySource]]:
        """Where each memory came from: its links, oldest first (`MemorySource`; a chat source
        reads its message's text, None once the chat was deleted or the text removed). Every
        id given is a key; an unknown id or one without links maps to []."""
        ids = [check_id(i) for i in memory_ids]
        with self.reader() as conn:
            return _sources.read(conn, ids)

    def memory_sources(self, memory_id: int) -> builtins.list[MemorySource]:
        """One memory's links, oldest first. NotFoundError for an unknown memory."""
        mid = check_id(memory_id)
        with self.reader() as conn:
            if fetch_memory(conn, mid) is None:
                raise NotFoundError(f"There is no memory #{memory_id}.")
            return _sources.read(conn, [mid])[mid]

    def remove_source_text(self, source_ids: int | Iterable[int]) -> int:
        """Remove the text of sources (`MemorySource.source_id`) in one transaction: a turn's
        kept text, a chat message's content (it becomes "" with meta {"removed": true}), and
        the REJECT events of those turns; the WAL is checkpointed so no file keeps it. The
        memories and links stay (they read "source deleted"). Returns how many sources still
        had text; NotFoundError for an unknown id (nothing removed)."""
        return _history.remove_source_text(self, _id_list(source_ids, what="source"))

    def history(self, memory_id: int | None = None, *, limit: int = 100) -> builtins.list[MemoryEvent]:
        """Events newest first (for one memory, or all). NotFoundError for an id never seen."""
        with self.reader() as conn:
            if memory_id is None:
                rows = conn.execute(f"SELECT {EVENT_COLS} FROM memory_events ORDER BY id DESC LIMIT ?",
                                    (int(limit),)).fetchall()
            else:
                mid = check_id(memory_id)
                rows = conn.execute(f"SELECT {EVENT_COLS} FROM memory_events WHERE memory_id = ? "
                                    "ORDER BY id DESC LIMIT ?", (mid, int(limit))).fetchall()
                if not rows and fetch_memory(conn, mid) is None:
                    raise NotFoundError(f"There is no memory #{memory_id}.")
            return [row_to_event(r) for r in rows]

    def undo(self, event_id: int | None = None, *, batch: int | None = None, actor: str = "user") -> MemoryChanges:
        """Revert the latest change not yet undone (a whole batch: one manager turn, one import,
        one multi-delete), or one given event, or one given batch (`MemoryChanges.batch_id`).
        NotFoundError when there is nothing to undo; ConflictError when the memory changed
        after that event."""
        return _history.undo(self, event_id, batch=batch, actor=actor)

    def export_jsonl(self, path: str | Path) -> int:
        """Write every memory (+ its history) as JSONL; returns the number of memories."""
        return _io.export_jsonl(self, Path(path))

    def import_jsonl(self, path: str | Path, *, actor: str = "import") -> "_io.ImportReport":
        """Import an export (re-embedding); duplicates skipped; a bad line -> ImportFormatError, nothing imported."""
        return _io.import_jsonl(self, Path(path), actor=actor)

    def reindex(self) -> None:
        """Re-embed every memory into a new vec0 table and rebuild FTS and the mirror (one transaction)."""
        with self.reader():
            with self._tx() as conn:
                rows = conn.execute("SELECT id, text FROM memories ORDER BY id").fetchall()
                _index.rebuild_vectors(conn, self.embedder, rows)
                conn.execute("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")
            self._mirror = None
            self._mirror_ready()

    def stats(self) -> dict:
        with self.reader() as conn:
            by_status = dict(conn.execute("SELECT status, count(*) FROM memories GROUP BY status").fetchall())
            one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
            return {
                "path": str(self.path),
                "size_bytes": self.path.stat().st_size if self.path.exists() else 0,
                "schema_version": self.schema_version,
                "embedder": self.embedder.name,
                "dim": int(self.embedder.dim),
                "memories": {s: int(by_status.get(s, 0)) for s in STATUSES},
                "total": sum(int(v) for v in by_status.values()),
                "speakers": len(self.speakers()),
                "events": one("SELECT count(*) FROM memory_events"),
                "conversations": one("SELECT count(*) FROM conversations WHERE deleted_at IS NULL"),
                "messages": one("SELECT count(*) FROM messages"),
            }


def _id_list(memory_ids, what: str = "memory") -> list[int]:
    """One id or an iterable of ids -> distinct ids in order; InvalidInputError for none."""
    if isinstance(memory_ids, (str, bytes)) or not isinstance(memory_ids, Iterable):
        return [check_id(memory_ids)]
    ids = list(dict.fromkeys(check_id(i) for i in memory_ids))
    if not ids:
        raise InvalidInputError(f"No {what} ids given.")
    return ids


def _rrf(*rankings: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score = sum over rankings of 1 / (RRF_K + rank)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (mid, _) in enumerate(ranking, start=1):
            fused[mid] = fused.get(mid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
