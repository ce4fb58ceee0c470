"""`memory-r1 memory ...`: curate the memory bank from the command line.

    add TEXT [--speaker S] [--time T]    list [--status S|all] [--speaker S] [--limit N]
    search QUERY [-k N] [--mode M]       show ID   edit ID TEXT   delete ID   restore ID
    forget ID... [--sources]             history [ID]   undo [--event ID]
    export FILE    import FILE    stats

Every command takes `--json` (one JSON document on stdout). Registration imports nothing
heavy; the bank (and, only when a command embeds, the embedder) load inside the command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
from dataclasses import asdict

from app.cli.options import add_command, positive
from core.errors import UserError

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

PREVIEW_CHARS = 160


def register(subparsers) -> None:
    p = subparsers.add_parser("memory", help="add, search, edit and curate memories",
                              description="Curate the long-term memory bank.")
    sub = p.add_subparsers(dest="memory_command", metavar="ACTION", required=True)

    def cmd(name, func, help_):
        sp = add_command(sub, func, name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="print machine-readable JSON")
        return sp

    sp = cmd("add", cmd_add, "add a memory")
    sp.add_argument("text")
    sp.add_argument("--speaker", help="the person the memory is about")
    sp.add_argument("--time", dest="observed_at", metavar="T", help="when it was said (free text or ISO)")
    sp = cmd("list", cmd_list, "list memories, newest first")
    sp.add_argument("--status", default="active", choices=["active", "deleted", "superseded", "all"])
    sp.add_argument("--speaker")
    sp.add_argument("--limit", type=positive, default=None, metavar="N")
    sp = cmd("search", cmd_search, "search memories")
    sp.add_argument("query")
    sp.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    sp.add_argument("--mode", default="hybrid", choices=["vector", "keyword", "hybrid"])
    sp.add_argument("--speaker")
    sp = cmd("show", cmd_show, "show a memory, where it came from and its history")
    sp.add_argument("id", type=int)
    sp = cmd("edit", cmd_edit, "replace a memory's text")
    sp.add_argument("id", type=int)
    sp.add_argument("text")
    sp.add_argument("--expected-version", type=int, default=None)
    sp = cmd("delete", cmd_delete, "delete a memory (undoable)")
    sp.add_argument("id", type=int)
    sp = cmd("restore", cmd_restore, "restore a deleted memory")
    sp.add_argument("id", type=int)
    sp = cmd("forget", cmd_forget, "permanently erase memories and their history")
    sp.add_argument("ids", type=int, nargs="+", metavar="ID")
    sp.add_argument("--sources", action="store_true",
                    help="also remove the text of the turns they came from (chat messages, ingested turns)")
    sp = cmd("history", cmd_history, "show the change history (of one memory, or all)")
    sp.add_argument("id", type=int, nargs="?")
    sp.add_argument("--limit", type=positive, default=100, metavar="N")
    sp = cmd("undo", cmd_undo, "undo the latest change (or a given event)")
    sp.add_argument("--event", type=int, default=None, metavar="ID")
    sp = cmd("export", cmd_export, "export memories and history as JSONL")
    sp.add_argument("file")
    sp = cmd("import", cmd_import, "import a JSONL export (duplicates skipped)")
    sp.add_argument("file")
    cmd("stats", cmd_stats, "show counts and where the database is")


def _bank():
    from core.memory import MemoryBank

    return MemoryBank.open()


def _emit(args, data, text_lines) -> int:
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        for line in text_lines:
            print(line)
    return 0


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _line(mem, score=None) -> str:
    parts = [f"#{mem.id}"]
    if score is not None:
        parts.append(f"{score:.3f}")
    if mem.status != "active":
        parts.append(f"[{mem.status}]")
    if mem.observed_at:
        parts.append(f"({mem.observed_at})")
    if mem.speaker:
        parts.append(f"{mem.speaker}:")
    return " ".join(parts + [_preview(mem.text)])


def _changes(changes) -> dict:
    return {"added": [asdict(m) for m in changes.added], "updated": [asdict(m) for m in changes.updated],
            "deleted": [asdict(m) for m in changes.deleted], "noops": changes.noops,
            "event_ids": changes.event_ids, "summary": changes.summary()}


def _run(args, call, render, *, embeds: bool = False) -> int:
    """Open the bank, `call(bank)`, close it, then print `render(result)` = (json data, text lines).
    `embeds`: the call loads the embedder before it writes, so a locked or read-only database
    is reported first (in the busy timeout), not after the model has loaded."""
    with _bank() as bank:
        if embeds:
            from core.memory.db import check_writable

            check_writable(bank.path)
        result = call(bank)
    data, lines = render(result)
    return _emit(args, data, lines)


def _write(args, change, line, memory_id: int | None = None, *, embeds: bool = False) -> int:
    """A one-memory change: `change(bank)` -> MemoryChanges; prints the memory as it now is
    (re-read when nothing changed, e.g. an edit to the same text)."""
    def call(bank: MemoryBank):
        changes = change(bank)
        return changes.memory if changes else bank.get(memory_id)

    return _run(args, call, lambda mem: (asdict(mem), [line(mem)]), embeds=embeds)


def cmd_add(args) -> int:
    return _write(args, lambda bank: bank.add(args.text, speaker=args.speaker, observed_at=args.observed_at,
                                              source="cli"), lambda mem: f"added {_line(mem)}", embeds=True)


def cmd_list(args) -> int:
    status = None if args.status == "all" else args.status
    return _run(args, lambda bank: bank.list(status=status, speaker=args.speaker, limit=args.limit),
                lambda mems: ([asdict(m) for m in mems], [_line(m) for m in mems] or ["no memories"]))


def cmd_search(args) -> int:
    return _run(args, lambda bank: bank.search(args.query, k=args.k, mode=args.mode, speaker=args.speaker),
                lambda hits: ([{"score": h.score, **asdict(h.memory)} for h in hits],
                              [_line(h.memory, h.score) for h in hits] or ["no matches"]))


def _editable(bank, memory_id: int):
    """The memory to edit, checked before the new text is embedded (a model load)."""
    from core.errors import ConflictError

    mem = bank.get(memory_id)
    if mem.status != "active":
        raise ConflictError(f"Memory #{mem.id} is {mem.status}; restore it before editing.")
    return bank


def cmd_edit(args) -> int:
    return _write(args, lambda bank: _editable(bank, args.id).edit(args.id, args.text,
                                                                    expected_version=args.expected_version),
                  lambda mem: f"edited {_line(mem)}", args.id, embeds=True)


def cmd_delete(args) -> int:
    return _write(args, lambda bank: bank.delete(args.id),
                  lambda mem: f"deleted #{mem.id} (undo with: memory restore {mem.id})")


def cmd_restore(args) -> int:
    return _write(args, lambda bank: bank.restore(args.id), lambda mem: f"restored {_line(mem)}")


def cmd_forget(args) -> int:
    ids = list(dict.fromkeys(args.ids))
    names = ", ".join(f"#{i}" for i in ids)
    what = f"memory {names} and its history were" if len(ids) == 1 else f"memories {names} and their history were"
    extra = "; the text of their sources was removed too" if args.sources else ""
    return _run(args, lambda bank: bank.forget(ids, sources=args.sources),
                lambda _changes: ({"forgotten": ids, "sources_removed": args.sources},
                                  [f"{what} erased{extra}"]))


def _event_line(e) -> str:
    what = f"#{e.memory_id}" if e.memory_id is not None else "-"
    text = e.new_text if e.new_text is not None else (e.old_text or "")
    flag = " (undone)" if e.undone else ""
    if e.event == "REJECT":  # a fact the grounding gate refused: never a memory
        turn = f" [{e.turn}]" if e.turn else ""
        quoted = f" \"{_preview(text)}\"" if text else ""
        return f"{e.id} {e.at} {e.actor} not saved: {e.reason or 'not supported by what was said'}{turn}{quoted}"
    return f"{e.id} {e.at} {e.actor} {e.event}{flag} {what} {_preview(text)}".rstrip()


def _source_line(s) -> str:
    """One provenance link: role, kind, ref, speaker and time, then the quote (or "source deleted")."""
    head = " ".join(p for p in (s.role, s.kind, s.ref or "") if p)
    who = ", ".join(p for p in (s.speaker, s.said_at) if p)
    if s.kind == "user":
        quote = "(your own edit)" if s.role == "edited" else "(added by you)"
    elif s.text is None:
        quote = "(source deleted)"
    else:
        quote = f"\"{_preview(s.text)}\""
    return f"  {head}" + (f" ({who})" if who else "") + f": {quote}"


def _show(bank: MemoryBank, memory_id: int) -> dict:
    """The memory, its links and history, and the facts refused from the turns it came from
    (REJECT events of those turns: they show what else was said and not saved)."""
    mem = bank.get(memory_id)  # NotFoundError before anything else
    links = bank.memory_sources(mem.id)
    events = bank.history(mem.id, limit=1000)
    turns = list(dict.fromkeys([s.ref for s in links if s.ref] + [e.turn for e in events if e.turn]))
    seen = {e.id for e in events}
    rejected = []
    for turn in turns:
        try:
            found = bank.rejected(turn)
        except UserError:  # a ref that is not a turn (e.g. an import file's name)
            continue
        rejected += [e for e in found if e.id not in seen]
        seen.update(e.id for e in found)
    return {"memory": mem, "sources": links, "history": events, "rejected": rejected}


def _show_lines(shown: dict) -> list[str]:
    mem = shown["memory"]
    lines = [f"#{mem.id} {mem.text}"]
    status = mem.status + (f" (superseded by #{mem.superseded_by})" if mem.superseded_by else "")
    facts = [("speaker", mem.speaker), ("time", mem.observed_at), ("status", status), ("version", str(mem.version)),
             ("created", mem.created_at), ("updated", mem.updated_at), ("origin", mem.source)]
    lines += [f"  {label}: {value}" for label, value in facts if value]
    lines.append("sources:" if shown["sources"] else "sources: none recorded")
    lines += [_source_line(s) for s in shown["sources"]]
    lines.append("history:")
    lines += ["  " + _event_line(e) for e in shown["history"]]
    if shown["rejected"]:
        lines.append("not saved from the same turns:")
        lines += ["  " + _event_line(e) for e in shown["rejected"]]
    return lines


def cmd_show(args) -> int:
    def data(shown: dict) -> dict:
        return {"memory": asdict(shown["memory"]),
                "sources": [{**asdict(s), "deleted": s.deleted} for s in shown["sources"]],
                "history": [asdict(e) for e in shown["history"]],
                "rejected": [asdict(e) for e in shown["rejected"]]}

    return _run(args, lambda bank: _show(bank, args.id), lambda shown: (data(shown), _show_lines(shown)))


def cmd_history(args) -> int:
    return _run(args, lambda bank: bank.history(args.id, limit=args.limit),
                lambda events: ([asdict(e) for e in events], [_event_line(e) for e in events] or ["no history"]))


def cmd_undo(args) -> int:
    return _run(args, lambda bank: bank.undo(args.event),
                lambda changes: (_changes(changes), [f"undone: {changes.summary()}"]))


def cmd_export(args) -> int:
    return _run(args, lambda bank: bank.export_jsonl(args.file),
                lambda n: ({"exported": n, "file": args.file}, [f"exported {n} memories to {args.file}"]))


def cmd_import(args) -> int:
    return _run(args, lambda bank: bank.import_jsonl(args.file),
                lambda report: ({"imported": report.imported, "skipped": report.skipped,
                                 "without_sources": report.without_sources, "notes": report.notes},
                                [f"imported {report.imported}, skipped {report.skipped} duplicates", *report.notes]),
                embeds=True)


STATS_LABELS = {"path": "database", "size_bytes": "size on disk", "schema_version": "schema version",
                "embedder": "embedder", "dim": "embedding dimensions", "memories": "memories", "total": "memories, all",
                "speakers": "speakers", "events": "history events", "conversations": "conversations",
                "messages": "messages"}


def stats_table(stats: dict) -> list[str]:
    """`bank.stats()` as aligned lines: one row per figure (a nested dict, e.g. memories by
    status, one row per entry: "memories  active"), labels left-aligned, numbers right-aligned
    in one column (the size in human units), text (path, embedder) left-aligned after them.
    Keys not in STATS_LABELS are shown by their own name.

    >>> print("\\n".join(stats_table({"memories": {"active": 12, "deleted": 1}, "events": 140, "embedder": "x"})))
    memories  active    12
    memories  deleted    1
    history events     140
    embedder           x
    """
    from core.llm.gguf_info import human_size

    rows: list[tuple[str, str, bool]] = []  # (label, value, numeric)
    for key, value in stats.items():
        label = STATS_LABELS.get(key, key.replace("_", " "))
        if isinstance(value, dict):
            width = max((len(k) for k in value), default=0)
            rows += [(f"{label}  {k:<{width}}", str(v), isinstance(v, (int, float))) for k, v in value.items()]
        elif key == "size_bytes" and isinstance(value, int):
            rows.append((label, human_size(value), True))
        else:
            rows.append((label, str(value), isinstance(value, (int, float)) and not isinstance(value, bool)))
    w_label = max((len(r[0]) for r in rows), default=0)
    w_num = max((len(v) for _, v, numeric in rows if numeric), default=0)
    return [f"{label:<{w_label}}  " + (f"{value:>{w_num}}" if numeric else value) for label, value, numeric in rows]


def cmd_stats(args) -> int:
    return _run(args, lambda bank: bank.stats(), lambda stats: (stats, stats_table(stats)))
