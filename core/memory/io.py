"""Export and import of memories (+ their history) as JSONL.

Line 1 is a header `{"type": "header", "format": "memory-r1-memories", "schema_version": 2,
"embedder": ..., "dim": ..., "exported_at": ..., "count": N}`; then one line per memory:
`{"type": "memory", "id", "text", "speaker", "observed_at", "created_at", "updated_at",
"source", "status", "version", "superseded_by", "history": [{"event", "old_text", "new_text",
"old_status", "new_status", "actor", "at", "turn", "reason", "undone"}, ...], "sources": [{"kind",
"role", "ref", "speaker", "said_at", "text", "linked_at"}, ...]}`. Vectors are not exported: import
re-embeds with the bank's embedder (the header's embedder is informative only).

Provenance (version 2): `sources` lists the memory's links (core.memory.sources), oldest
first. A chat source's `text` is its message's text at export time (None once the chat was
deleted or the text removed), so the file stands alone. On import, a "turn" or "import"
source is found by its `ref` (an existing one with the same ref is reused) or created with
the exported text; a "chat" source becomes an "import" source holding the text and the
original ref (chat ids do not carry across banks); a "user" link (the user's own edit or
addition) is recreated without a source. `superseded_by` (an id of the same file) is mapped
to the imported memory. Version-1 exports and headerless files have no links: they import as
before and `ImportReport.without_sources` / `notes` say how many memories came without.

Import validates the whole file before writing anything (`ImportFormatError("line N: ...")`),
skips duplicates (same text ignoring case/spacing, same speaker and status, already in the
bank or earlier in the file), and inserts everything in one transaction (with an IMPORT event
per memory), so a crash or error half-way imports nothing. Headerless files of
`{"text": ...}` lines are accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ImportFormatError, InvalidInputError, UserError
from core.fileio import as_disk_full, atomic_path
from core.types import MemoryChanges, SourceTurn

from core.memory import sources as _sources
from core.memory.db import now_iso
from core.memory.rows import MEM_COLS, STATUSES, row_to_memory
from core.memory.text import clean_optional, clean_text, text_key

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

FORMAT = "memory-r1-memories"
EXPORT_VERSION = 2
EVENTS = ("ADD", "UPDATE", "DELETE", "NOOP", "EDIT", "RESTORE", "IMPORT", "UNDO", "FORGET", "REJECT", "SUPERSEDE")
_HIST_FIELDS = ("event", "old_text", "new_text", "old_status", "new_status", "actor", "at", "turn", "reason",
                "undone")
_SOURCE_FIELDS = ("ref", "speaker", "said_at", "text", "linked_at")


@dataclass(frozen=True)
class ImportReport:
    """How many memories an import added and skipped, and what it changed (`changes.batch_id`
    undoes the whole import). `without_sources`: imported memories whose line had no
    `sources` field (an export from before provenance, or a plain `{"text": ...}` file)."""

    imported: int
    skipped: int
    changes: MemoryChanges = field(default_factory=MemoryChanges, compare=False, repr=False)
    without_sources: int = field(default=0, compare=False)

    @property
    def notes(self) -> list[str]:
        """Lines for the user about what the import could not carry."""
        if not self.without_sources:
            return []
        n = self.without_sources
        return [f"{n} {'memory' if n == 1 else 'memories'} had no source links (older export)."]


@dataclass
class _Record:
    line: int
    text: str
    speaker: str | None = None
    observed_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    source: str | None = None
    status: str = "active"
    version: int = 1
    history: list[dict] = field(default_factory=list)
    sources: list[dict] | None = None  # None: the line has no `sources` field (an older export)
    id: int | None = None  # the exporting bank's id (for `superseded_by`)
    superseded_by: int | None = None

    @property
    def key(self) -> tuple:
        return (text_key(self.text), self.speaker, self.status)


def export_jsonl(bank: "MemoryBank", path: Path) -> int:
    """Write the export atomically (temp file + rename); returns the number of memories."""
    count = 0
    try:
        with atomic_path(path, suffix=".part", make_parents=False) as tmp, bank.reader() as conn, \
                open(tmp, "w", encoding="utf-8", newline="\n") as out:
            conn.execute("BEGIN")  # one consistent snapshot
            try:
                total = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
                header = {"type": "header", "format": FORMAT, "schema_version": EXPORT_VERSION,
                          "embedder": bank.embedder.name, "dim": int(bank.embedder.dim),
                          "exported_at": now_iso(), "count": total}
                out.write(json.dumps(header, ensure_ascii=False) + "\n")
                for row in conn.execute(f"SELECT {MEM_COLS} FROM memories ORDER BY id").fetchall():
                    out.write(json.dumps(_memory_line(conn, row), ensure_ascii=False) + "\n")
                    count += 1
            finally:
                conn.execute("COMMIT")
    except OSError as exc:  # atomic_path removed the temp file
        raise (as_disk_full(exc, path) or InvalidInputError(f"Cannot write {path}: {exc.strerror or exc}.")) from exc
    return count


def _memory_line(conn, row) -> dict:
    mem = row_to_memory(row)
    events = conn.execute(f"SELECT {', '.join(_HIST_FIELDS)} FROM memory_events WHERE memory_id = ? ORDER BY id",
                          (mem.id,)).fetchall()
    history = [dict(zip(_HIST_FIELDS, e)) for e in events]
    for h in history:
        h["undone"] = bool(h["undone"])
    links = [{"kind": s.kind, "role": s.role, "ref": s.ref, "speaker": s.speaker, "said_at": s.said_at,
              "text": s.text, "linked_at": s.linked_at or None} for s in _sources.read(conn, [mem.id])[mem.id]]
    return {"type": "memory", "id": mem.id, "text": mem.text, "speaker": mem.speaker,
            "observed_at": mem.observed_at, "created_at": mem.created_at, "updated_at": mem.updated_at,
            "source": mem.source, "status": mem.status, "version": mem.version,
            "superseded_by": mem.superseded_by, "history": history, "sources": links}


def import_jsonl(bank: "MemoryBank", path: Path, *, actor: str = "import") -> ImportReport:
    """See the module docstring. Raises ImportFormatError (nothing imported), InvalidInputError."""
    records = parse_file(path)
    seen: set[tuple] = set()
    unique = []
    for rec in records:
        if rec.key not in seen:
            seen.add(rec.key)
            unique.append(rec)
    vecs = bank.embed([r.text for r in unique])
    imported = without = 0
    new_ids: dict[int, int] = {}
    supersessions: list[tuple[int, int]] = []
    with bank.batch(actor, f"import:{path.name}") as batch:
        for rec, vec in zip(unique, vecs):
            if _exists(batch.conn, rec):
                continue
            mem = batch.insert(rec.text, vec, speaker=rec.speaker, observed_at=rec.observed_at,
                               source=rec.source or f"import:{path.name}", status=rec.status,
                               created_at=rec.created_at, updated_at=rec.updated_at, version=rec.version,
                               event=None)
            for h in rec.history:
                batch.event(mem.id, h["event"], old_text=h.get("old_text"), new_text=h.get("new_text"),
                            old_status=h.get("old_status"), new_status=h.get("new_status"),
                            actor=h.get("actor") or "import", at=h.get("at"), turn=h.get("turn"),
                            undone=bool(h.get("undone")), origin="import", reason=h.get("reason"))
            event_id = batch.event(mem.id, "IMPORT", new_text=mem.text, new_status=mem.status)
            if rec.sources is None:
                without += 1
            else:
                _link_sources(batch.conn, mem.id, rec.sources, event_id)
            if rec.id is not None:
                new_ids[rec.id] = mem.id
            if rec.superseded_by is not None:
                supersessions.append((mem.id, rec.superseded_by))
            imported += 1
        for mid, old_newer in supersessions:
            if old_newer in new_ids:  # a newer memory skipped as a duplicate: left unlinked
                batch.conn.execute("UPDATE memories SET superseded_by = ? WHERE id = ?", (new_ids[old_newer], mid))
    return ImportReport(imported=imported, skipped=len(records) - imported, changes=batch.changes,
                        without_sources=without)


def _link_sources(conn, memory_id: int, links: list[dict], event_id: int) -> None:
    """Recreate one imported memory's links (see the module docstring), keeping `linked_at`."""
    for s in links:
        if s["kind"] == "user":
            source_id = None
        else:
            turn = SourceTurn(s["text"] or "", speaker=s["speaker"], said_at=s["said_at"], ref=s["ref"])
            source_id = _sources.resolve(conn, turn, kind="turn" if s["kind"] == "turn" else "import")
            if source_id is not None and conn.execute(
                    "SELECT 1 FROM memory_sources WHERE memory_id = ? AND source_id = ? AND role = ?",
                    (memory_id, source_id, s["role"])).fetchone() is not None:
                continue
        conn.execute("INSERT INTO memory_sources(memory_id, source_id, role, linked_at, event_id) "
                     "VALUES (?, ?, ?, ?, ?)", (memory_id, source_id, s["role"], s["linked_at"] or now_iso(), event_id))


def _exists(conn, rec: _Record) -> bool:
    return conn.execute("SELECT 1 FROM memories WHERE text_key = ? AND speaker IS ? AND status = ? LIMIT 1",
                        (text_key(rec.text), rec.speaker, rec.status)).fetchone() is not None


def parse_file(path: Path) -> list[_Record]:
    """Every memory record in the file, or ImportFormatError naming the first bad line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    records: list[_Record] = []
    first = True
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = _parse_line(line, first)
        except UserError as exc:
            err = ImportFormatError(f"line {number}: {exc} (in {path.name}); nothing was imported.")
            err.line = number  # type: ignore[attr-defined]
            raise err from None
        first = False
        if obj is not None:
            obj.line = number
            records.append(obj)
    return records


def _parse_line(line: bytes, first: bool) -> _Record | None:
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInputError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # e.g. a number past the interpreter's digit limit
        raise InvalidInputError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InvalidInputError("expected a JSON object")
    kind = obj.get("type", "memory")
    if kind == "header":
        if not first:
            raise InvalidInputError("a header is only allowed on the first line")
        _check_header(obj)
        return None
    if kind != "memory":
        raise InvalidInputError(f"unknown line type {kind!r}")
    return _record(obj)


def _check_header(obj: dict) -> None:
    if obj.get("format", FORMAT) != FORMAT:
        raise InvalidInputError(f"not a Memory-R1 memory export (format {obj.get('format')!r})")
    version = obj.get("schema_version", EXPORT_VERSION)
    if not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"bad schema_version {version!r}")
    if version > EXPORT_VERSION:
        raise InvalidInputError(f"written by a newer Memory-R1 (export version {version}; "
                                f"this one reads up to {EXPORT_VERSION})")


def _opt_str(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name!r} must be a string or null")
    return clean_optional(value)


def _record(obj: dict) -> _Record:
    if "text" not in obj:
        raise InvalidInputError("missing 'text'")
    text = clean_text(obj["text"])
    status = obj.get("status") or "active"
    if status not in STATUSES:
        raise InvalidInputError(f"unknown status {status!r}")
    version = obj.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"bad version {version!r}")
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise InvalidInputError("'history' must be a list")
    sources = obj.get("sources")
    if "sources" in obj and not isinstance(sources, list):
        raise InvalidInputError("'sources' must be a list")
    return _Record(line=0, text=text, speaker=_opt_str(obj, "speaker"), observed_at=_opt_str(obj, "observed_at"),
                   created_at=_opt_str(obj, "created_at"), updated_at=_opt_str(obj, "updated_at"),
                   source=_opt_str(obj, "source"), status=status, version=version,
                   history=[_history_entry(h) for h in history],
                   sources=None if sources is None else [_source_entry(s) for s in sources],
                   id=obj["id"] if isinstance(obj.get("id"), int) and not isinstance(obj["id"], bool) else None,
                   superseded_by=_opt_int(obj, "superseded_by"))


def _opt_int(obj: dict, name: str) -> int | None:
    value = obj.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(f"{name!r} must be a whole number or null")
    return value


def _source_entry(s) -> dict:
    if not isinstance(s, dict):
        raise InvalidInputError("each source must be an object")
    if s.get("kind") not in _sources.KINDS:
        raise InvalidInputError(f"unknown source kind {s.get('kind')!r}")
    if s.get("role") not in _sources.ROLES:
        raise InvalidInputError(f"unknown source role {s.get('role')!r}")
    out = {"kind": s["kind"], "role": s["role"]}
    for name in _SOURCE_FIELDS:
        value = s.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"source {name!r} must be a string or null")
        out[name] = clean_optional(value)
    return out


def _history_entry(h) -> dict:
    if not isinstance(h, dict):
        raise InvalidInputError("each history entry must be an object")
    if h.get("event") not in EVENTS:
        raise InvalidInputError(f"unknown history event {h.get('event')!r}")
    out = {"event": h["event"], "undone": bool(h.get("undone"))}
    for name in _HIST_FIELDS[1:-1]:
        value = h.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"history {name!r} must be a string or null")
        out[name] = value
    return out
