"""Export one conversation as Markdown (to read or share) or JSON (everything stored: each
message's meta, reply versions, statistics), written atomically (`core.fileio`).

    export_chat(bank.chats, conversation_id, Path("chat.md"))

Any thread (the chat store takes the bank's lock). Raises InvalidInputError for a file name
that is neither .md/.markdown nor .json, NotFoundError for an unknown conversation,
DiskFullError / OSError when the file cannot be written (an existing file is left as it was).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from core.errors import InvalidInputError
from core.fileio import atomic_write_text

FORMAT = "memory-r1-chat"
FORMATS = {".md": "markdown", ".markdown": "markdown", ".json": "json"}


def chat_markdown(chats, cid: int) -> str:
    """The chat as Markdown: title, its system prompt, then each message under "You" or
    "Assistant" (a reply's model and speed in italics under it)."""
    conv = chats.get_conversation(cid)
    lines = [f"# {conv.title}", "", f"*Exported from Memory-R1 on {_now()}*", ""]
    system = chats.system_prompt(cid)
    if system:
        lines += ["**System prompt:**", "", *(f"> {line}" for line in system.splitlines()), ""]
    for msg in chats.messages(cid):
        if msg.role not in ("user", "assistant"):
            continue
        lines += [f"## {'You' if msg.role == 'user' else 'Assistant'}", "", msg.content, ""]
        meta = msg.meta or {}
        facts = [str(meta["model"])] if meta.get("model") else []
        if isinstance(meta.get("tokens_per_s"), (int, float)):
            facts.append(f"{meta['tokens_per_s']:.1f} tokens/s")
        if isinstance(meta.get("versions"), list) and len(meta["versions"]) > 1:
            facts.append(f"version {int(meta.get('version', 0)) + 1} of {len(meta['versions'])}")
        if meta.get("cancelled"):
            facts.append("stopped")
        if facts and msg.role == "assistant":
            lines += [f"*{' · '.join(facts)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def chat_json(chats, cid: int) -> dict:
    """The chat as stored: the conversation, its system prompt and every message with its meta."""
    conv = chats.get_conversation(cid)
    return {"format": FORMAT, "version": 1, "exported_at": _now(),
            "conversation": {"id": conv.id, "title": conv.title, "created_at": conv.created_at,
                             "updated_at": conv.updated_at, "temporary": conv.temporary},
            "system_prompt": chats.system_prompt(cid),
            "messages": [{"id": m.id, "role": m.role, "content": m.content, "created_at": m.created_at,
                          "meta": m.meta} for m in chats.messages(cid) if m.role in ("user", "assistant")]}


def export_chat(chats, cid: int, path: Path | str, fmt: str | None = None) -> Path:
    """Write the chat to `path` as `fmt` ("markdown" | "json"; default: from the suffix)."""
    path = Path(path)
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt not in ("markdown", "json"):
        raise InvalidInputError(f"Export to a .md or .json file, not {path.name!r}.")
    text = chat_markdown(chats, cid) if fmt == "markdown" else json.dumps(chat_json(chats, cid), ensure_ascii=False,
                                                                           indent=2) + "\n"
    atomic_write_text(path, text)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
